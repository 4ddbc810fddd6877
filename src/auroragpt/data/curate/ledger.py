"""Reading a curation output folder back: its run recipe, shard recipes (counts) and ledgers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from auroragpt.data.curate.runner import RUN_RECIPE
from auroragpt.errors import DataError


def run_recipe(out_dir: str | Path) -> dict:
    """The run recipe of a finished or unfinished curation folder (an error when there is none)."""
    path = Path(out_dir) / RUN_RECIPE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{out_dir}: not a curation output folder (no {RUN_RECIPE})",
                        hint="pass the --out folder of `auroragpt data dedup|filter|decontaminate`") from None
    except ValueError as err:
        raise DataError(f"{path}: unreadable recipe ({err})") from None


def shard_counts(out_dir: str | Path) -> list[dict]:
    """Counts of every finished shard, in name order; an unfinished run is an error (it would undercount)."""
    folder = Path(out_dir)
    recipe = run_recipe(folder)
    found = []
    for path in sorted(folder.glob("*.recipe.json")):
        try:
            found.append(json.loads(path.read_text(encoding="utf-8"))["counts"])
        except (ValueError, KeyError) as err:
            raise DataError(f"{path}: unreadable shard recipe ({err})") from None
    expected = len(recipe.get("inputs", []))
    if len(found) != expected:
        raise DataError(f"{out_dir}: {len(found)} of {expected} shards finished",
                        hint=f"run the same `auroragpt data {recipe.get('command')}` command again to finish it")
    return found


def ledger_entries(out_dir: str | Path) -> Iterator[dict]:
    """Every ledger line of the folder (shards in name order, lines in document order)."""
    for path in sorted(Path(out_dir).glob("*.ledger.jsonl")):
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                try:
                    yield json.loads(line)
                except ValueError:
                    raise DataError(f"{path}:{number}: not a JSON line") from None
