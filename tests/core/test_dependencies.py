"""Dependencies point one way: what loads models (eval, export, serve, model) never imports the
training package, and model/ imports neither export/ nor parallel/ nor runtime/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "auroragpt"
FORBIDDEN = {
    "model": ("auroragpt.train", "auroragpt.export", "auroragpt.eval", "auroragpt.serve", "auroragpt.parallel",
              "auroragpt.runtime"),
    "eval": ("auroragpt.train",),
    "export": ("auroragpt.train",),
    "serve": ("auroragpt.train",),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package):
    bad = [f"{path.relative_to(SRC)}:{line} imports {name}"
           for path in sorted((SRC / package).rglob("*.py")) for line, name in _imports(path)
           if name.startswith(FORBIDDEN[package])]
    assert not bad, "\n".join(bad)
