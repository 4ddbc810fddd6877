"""pytest silently skips folders matching norecursedirs (its default list holds `dist` and `build`):
every folder of tests must stay outside that list, or its tests never run in CI."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_no_test_folder_matches_norecursedirs():
    options = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    patterns = options.get("norecursedirs")
    assert patterns is not None, "without norecursedirs, pytest's default list skips tests/dist"
    folders = [p.name for p in TESTS.iterdir() if p.is_dir() and any(p.glob("test_*.py"))]
    assert "dist" in folders
    skipped = [f for f in folders if any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert not skipped, f"pytest would skip tests/{skipped[0]}"
