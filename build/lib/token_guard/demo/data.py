"""The demo's bundled sample data: generated deterministically into one SQLite file, no download.

Tables (bare names, as a SQLite connection sees them):

- ``cities``    — a small world gazetteer (name, country, population, point); also what the
  demo's geocoder answers from.
- ``stores``    — a few thousand retail stores scattered around those cities, with attributes
  worth filtering and styling on (``storetype``, ``revenue``, ``size_m2``, ``opened``).
- ``customers`` — made-up people with e-mail addresses: the table a demo token should *not*
  be granted, so that a denial has something worth protecting.

Geometries are WKT text in a ``geom`` column (``POINT(lon lat)``, WGS84), because SQLite has no
geometry type without SpatiaLite and ``geom`` is the column CARTO's clients look for.
The same seed always produces the same rows, so tests and screenshots are reproducible.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sqlite3
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DATABASE_FILE = "demo.db"
#: Bumped whenever the generated content changes, so an old file is regenerated, not trusted.
SCHEMA_VERSION = 1
SEED = 20240601
STORE_COUNT = 3000
CUSTOMER_COUNT = 600

STORE_TYPES: tuple[str, ...] = (
    "Supermarket",
    "Convenience Store",
    "Hypermarket",
    "Discount Store",
    "Drugstore",
)
_BRANDS = ("Fresco", "Daily", "MegaMart", "Saver", "Corner", "Verde", "Urbano", "Nord")
_FIRST_NAMES = ("Ana", "Ben", "Chloé", "David", "Eva", "Farid", "Grace", "Hiro", "Inés", "Jon",
                "Kai", "Lucía", "Marta", "Nils", "Olga", "Pau", "Quinn", "Rosa", "Sven", "Teresa")
_LAST_NAMES = ("García", "Smith", "Müller", "Rossi", "Dubois", "Silva", "Tanaka", "Kowalski",
               "Jensen", "Novak", "Costa", "Byrne", "Ivanova", "Okafor", "Lee", "Moreau")


@dataclass(frozen=True, slots=True)
class Place:
    """One gazetteer entry: a city with its ISO 3166-1 alpha-2 country and a WGS84 point."""

    name: str
    country: str
    longitude: float
    latitude: float
    population: int


GAZETTEER: tuple[Place, ...] = (
    Place("Madrid", "ES", -3.7038, 40.4168, 3_300_000),
    Place("Barcelona", "ES", 2.1734, 41.3851, 1_620_000),
    Place("Valencia", "ES", -0.3763, 39.4699, 790_000),
    Place("Seville", "ES", -5.9845, 37.3891, 690_000),
    Place("Bilbao", "ES", -2.9350, 43.2630, 345_000),
    Place("Lisbon", "PT", -9.1393, 38.7223, 545_000),
    Place("Porto", "PT", -8.6291, 41.1579, 232_000),
    Place("Paris", "FR", 2.3522, 48.8566, 2_160_000),
    Place("Lyon", "FR", 4.8357, 45.7640, 516_000),
    Place("Marseille", "FR", 5.3698, 43.2965, 870_000),
    Place("London", "GB", -0.1276, 51.5072, 8_900_000),
    Place("Manchester", "GB", -2.2426, 53.4808, 550_000),
    Place("Dublin", "IE", -6.2603, 53.3498, 590_000),
    Place("Amsterdam", "NL", 4.9041, 52.3676, 870_000),
    Place("Brussels", "BE", 4.3517, 50.8503, 1_200_000),
    Place("Berlin", "DE", 13.4050, 52.5200, 3_640_000),
    Place("Munich", "DE", 11.5820, 48.1351, 1_470_000),
    Place("Hamburg", "DE", 9.9937, 53.5511, 1_840_000),
    Place("Vienna", "AT", 16.3738, 48.2082, 1_900_000),
    Place("Zurich", "CH", 8.5417, 47.3769, 420_000),
    Place("Rome", "IT", 12.4964, 41.9028, 2_870_000),
    Place("Milan", "IT", 9.1900, 45.4642, 1_350_000),
    Place("Copenhagen", "DK", 12.5683, 55.6761, 630_000),
    Place("Stockholm", "SE", 18.0686, 59.3293, 975_000),
    Place("Oslo", "NO", 10.7522, 59.9139, 700_000),
    Place("Warsaw", "PL", 21.0122, 52.2297, 1_790_000),
    Place("Prague", "CZ", 14.4378, 50.0755, 1_300_000),
    Place("New York", "US", -74.0060, 40.7128, 8_300_000),
    Place("Boston", "US", -71.0589, 42.3601, 675_000),
    Place("Chicago", "US", -87.6298, 41.8781, 2_700_000),
    Place("Los Angeles", "US", -118.2437, 34.0522, 3_900_000),
    Place("San Francisco", "US", -122.4194, 37.7749, 815_000),
    Place("Seattle", "US", -122.3321, 47.6062, 740_000),
    Place("Miami", "US", -80.1918, 25.7617, 440_000),
    Place("Toronto", "CA", -79.3832, 43.6532, 2_790_000),
    Place("Mexico City", "MX", -99.1332, 19.4326, 9_200_000),
    Place("Bogotá", "CO", -74.0721, 4.7110, 7_400_000),
    Place("São Paulo", "BR", -46.6333, -23.5505, 12_300_000),
    Place("Buenos Aires", "AR", -58.3816, -34.6037, 3_100_000),
    Place("Tokyo", "JP", 139.6503, 35.6762, 13_900_000),
    Place("Sydney", "AU", 151.2093, -33.8688, 5_300_000),
)


def point_wkt(longitude: float, latitude: float) -> str:
    """WKT for a WGS84 point, rounded to 6 decimals (about 0.1 m)."""
    return f"POINT({longitude:.6f} {latitude:.6f})"


def normalize_place_text(text: str) -> str:
    """Lower-case, accent-free, punctuation-free text with single spaces, for matching names."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    cleaned = "".join(c if c.isalnum() else " " for c in bare.casefold())
    return " ".join(cleaned.split())


def ensure_database(data_dir: Path | str) -> Path:
    """Return the demo database under ``data_dir``, generating it first if missing or outdated."""
    directory = Path(data_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / DATABASE_FILE
    if path.exists() and _schema_version(path) == SCHEMA_VERSION:
        return path
    # Build beside the target and rename: two demos starting at once never see a half file.
    partial = directory / f".{DATABASE_FILE}.{os.getpid()}.partial"
    partial.unlink(missing_ok=True)
    try:
        with contextlib.closing(sqlite3.connect(partial)) as db:
            _populate(db)
            db.commit()
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _schema_version(path: Path) -> int | None:
    try:
        uri = f"{path.as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            row = db.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else None


def _populate(db: sqlite3.Connection) -> None:
    rng = random.Random(SEED)
    db.executescript(
        """
        CREATE TABLE cities (
            cartodb_id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            country TEXT NOT NULL,
            population INTEGER NOT NULL,
            geom TEXT NOT NULL
        );
        CREATE TABLE stores (
            cartodb_id INTEGER PRIMARY KEY,
            store_id TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            storetype TEXT NOT NULL,
            revenue INTEGER NOT NULL,
            size_m2 INTEGER NOT NULL,
            opened TEXT NOT NULL,
            city TEXT NOT NULL,
            country TEXT NOT NULL,
            geom TEXT NOT NULL
        );
        CREATE TABLE customers (
            cartodb_id INTEGER PRIMARY KEY,
            full_name TEXT NOT NULL,
            email TEXT NOT NULL,
            lifetime_value REAL NOT NULL,
            city TEXT NOT NULL,
            geom TEXT NOT NULL
        );
        """
    )
    db.executemany(
        "INSERT INTO cities VALUES (?, ?, ?, ?, ?)",
        [
            (i, p.name, p.country, p.population, point_wkt(p.longitude, p.latitude))
            for i, p in enumerate(GAZETTEER, start=1)
        ],
    )
    db.executemany("INSERT INTO stores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _stores(rng))
    db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)", _customers(rng))
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _scatter(rng: random.Random, place: Place, spread_deg: float) -> tuple[float, float]:
    # Longitude degrees shrink with latitude; widen them so clusters look round on a map.
    lat = place.latitude + rng.gauss(0.0, spread_deg)
    lon = place.longitude + rng.gauss(0.0, spread_deg) / max(math.cos(math.radians(lat)), 0.2)
    return lon, max(-85.0, min(85.0, lat))


def _weighted_places(rng: random.Random, count: int) -> list[Place]:
    # Square-root weights: big cities get more stores, small ones still get some.
    weights = [math.sqrt(p.population) for p in GAZETTEER]
    return rng.choices(GAZETTEER, weights=weights, k=count)


def _stores(rng: random.Random) -> Iterator[tuple[object, ...]]:
    for i, place in enumerate(_weighted_places(rng, STORE_COUNT), start=1):
        lon, lat = _scatter(rng, place, 0.12)
        storetype = rng.choices(STORE_TYPES, weights=(40, 30, 8, 15, 7))[0]
        base = {"Hypermarket": 9_000, "Supermarket": 2_500, "Discount Store": 1_500}.get(
            storetype, 400
        )
        size = int(base * rng.uniform(0.6, 1.6))
        revenue = int(size * rng.uniform(900, 2_600))
        opened = f"{rng.randint(1985, 2023)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        name = f"{rng.choice(_BRANDS)} {place.name} {i}"
        yield (i, f"S{i:05d}", name, storetype, revenue, size, opened, place.name,
               place.country, point_wkt(lon, lat))


def _customers(rng: random.Random) -> Iterator[tuple[object, ...]]:
    for i, place in enumerate(_weighted_places(rng, CUSTOMER_COUNT), start=1):
        lon, lat = _scatter(rng, place, 0.08)
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        email = f"{normalize_place_text(first)}.{normalize_place_text(last)}{i}@example.com"
        value = round(rng.lognormvariate(6.0, 1.0), 2)
        yield (i, f"{first} {last}", email, value, place.name, point_wkt(lon, lat))
