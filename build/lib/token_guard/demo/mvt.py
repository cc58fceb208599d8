"""Mapbox Vector Tile encoding of point layers: the demo's tiles, written without a library.

Only what the demo serves: one layer of points per tile, feature properties as MVT values
(string, integer, float, bool), protobuf written by hand (varints, zigzag, length-delimited).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

MVT_EXTENT = 4096


def lonlat_to_world(lon: float, lat: float) -> tuple[float, float]:
    """Web Mercator position of a point in [0, 1)² (0,0 = north-west corner)."""
    lat = max(-85.05112878, min(85.05112878, lat))
    x = (lon + 180.0) / 360.0
    sin_lat = math.sin(math.radians(lat))
    y = 0.5 - math.log((1 + sin_lat) / (1 - sin_lat)) / (4 * math.pi)
    # Rounding at the edges (lon 180, lat ±85.05) must not push a point out of every tile.
    top = math.nextafter(1.0, 0.0)
    return min(max(x, 0.0), top), min(max(y, 0.0), top)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _field(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def _mvt_value(value: str | int | float | bool) -> bytes:
    # vector_tile.proto Value: 1 string, 3 double, 6 sint64, 7 bool.
    if isinstance(value, bool):
        return _field(7, 0) + _varint(int(value))
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return _field(6, 0) + _varint(_zigzag(value))
    if isinstance(value, int | float):
        return _field(3, 1) + struct.pack("<d", float(value))
    return _length_delimited(1, value.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class TilePoint:
    """One point feature in tile coordinates (0..extent), with its id and properties."""

    feature_id: int | None
    x: int
    y: int
    properties: tuple[tuple[str, str | int | float | bool], ...]


def encode_mvt(layer_name: str, points: Sequence[TilePoint], extent: int = MVT_EXTENT) -> bytes:
    """A Mapbox Vector Tile (spec 2.1) with one layer of point features."""
    keys: dict[str, int] = {}
    values: dict[tuple[type, str | int | float | bool], int] = {}
    features = bytearray()
    for point in points:
        tags: list[int] = []
        for key, value in point.properties:
            tags.append(keys.setdefault(key, len(keys)))
            # Keyed by type too: True == 1 == 1.0 in Python but are different MVT values.
            tags.append(values.setdefault((type(value), value), len(values)))
        feature = bytearray()
        if point.feature_id is not None and point.feature_id >= 0:
            feature += _field(1, 0) + _varint(point.feature_id)
        feature += _length_delimited(2, b"".join(_varint(t) for t in tags))
        feature += _field(3, 0) + _varint(1)  # GeomType POINT
        command = b"".join(_varint(v) for v in (9, _zigzag(point.x), _zigzag(point.y)))
        feature += _length_delimited(4, command)  # MoveTo(1), dx, dy
        features += _length_delimited(2, bytes(feature))
    layer = bytearray(_field(15, 0) + _varint(2))
    layer += _length_delimited(1, layer_name.encode("utf-8"))
    layer += features
    for key in keys:
        layer += _length_delimited(3, key.encode("utf-8"))
    for _, value in values:
        layer += _length_delimited(4, _mvt_value(value))
    layer += _field(5, 0) + _varint(extent)
    return _length_delimited(3, bytes(layer))
