"""Demo corpora from text every Python installation ships, so the demo needs no network.

"code": the standard library's own source files. "prose": the `pydoc_data` help topics plus the
docstrings of standard-library modules, classes and functions (read with `ast`, never imported).
Files are chosen in sorted order up to a byte budget, so the output is deterministic for a given
Python installation and stays a few MB.
"""

from __future__ import annotations

import ast
import json
import os
import sysconfig
from pathlib import Path

from auroragpt.atomic import atomic_path
from auroragpt.errors import DataError

CODE_BUDGET = 3_000_000  # bytes of source text
PROSE_BUDGET = 2_000_000
FILES_PER_CORPUS = 2
_SKIP_PARTS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__", "turtledemo"}


def _stdlib_sources() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise DataError(f"{root}: the Python standard library source folder is missing")
    files = [p for p in sorted(root.rglob("*.py")) if not _SKIP_PARTS.intersection(p.relative_to(root).parts)]
    return files


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def _docstrings(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 200:
                found.append(doc)
    return found


def _write_jsonl(records: list[dict], out_dir: Path, name: str) -> list[Path]:
    """Split `records` over FILES_PER_CORPUS files, each written under a temporary name first."""
    paths = []
    per_file = -(-len(records) // FILES_PER_CORPUS)
    for k in range(FILES_PER_CORPUS):
        path = out_dir / f"{name}_{k:02d}.jsonl"
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
            for record in records[k * per_file : (k + 1) * per_file]:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths


def build_demo_corpora(out_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """Write code_XX.jsonl and prose_XX.jsonl under `out_dir`; returns {"code": [...], "prose": [...]}."""
    from pydoc_data import topics

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(sysconfig.get_paths()["stdlib"])
    code, prose = [], []
    code_bytes = prose_bytes = 0
    for name in sorted(topics.topics):
        text = topics.topics[name].strip()
        if text and prose_bytes < PROSE_BUDGET:
            prose.append({"text": text, "source": f"pydoc_data.topics:{name}"})
            prose_bytes += len(text)
    for path in _stdlib_sources():
        if code_bytes >= CODE_BUDGET and prose_bytes >= PROSE_BUDGET:
            break
        source = _read(path)
        if not source:
            continue
        rel = path.relative_to(root).as_posix()
        if code_bytes < CODE_BUDGET:
            code.append({"text": source, "source": rel})
            code_bytes += len(source)
        for doc in _docstrings(source):
            if prose_bytes >= PROSE_BUDGET:
                break
            prose.append({"text": doc, "source": rel})
            prose_bytes += len(doc)
    return {"code": _write_jsonl(code, out, "code"), "prose": _write_jsonl(prose, out, "prose")}
