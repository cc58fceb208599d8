"""What a package index shows: the licence, the project metadata and one version."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import token_guard

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]


def test_the_licence_is_the_full_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_text("utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]


def test_the_project_metadata_is_complete() -> None:
    for field in ("description", "readme", "requires-python", "authors", "keywords",
                  "classifiers", "urls"):
        assert PROJECT.get(field), field
    assert PROJECT["requires-python"] == ">=3.11"
    assert "Programming Language :: Python :: 3.11" in PROJECT["classifiers"]
    assert "Typing :: Typed" in PROJECT["classifiers"]
    assert all(url.startswith("https://") for url in PROJECT["urls"].values())


def test_the_version_is_written_once() -> None:
    """pyproject reads it from token_guard.__version__; the installed metadata agrees."""
    assert "version" not in PROJECT and PROJECT["dynamic"] == ["version"]
    dynamic = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    assert dynamic["dynamic"]["version"] == {"attr": "token_guard.__version__"}
    assert token_guard.__version__ == importlib.metadata.version("token_guard")
