"""Commands that judge each document on its own (filter, decontaminate): one pass per shard."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from auroragpt.data.curate import runner
from auroragpt.data.curate.normalize import count_words
from auroragpt.data.curate.shards import Shard, dumps_record, iter_documents, plan_shards
from auroragpt.data.readers import ReadErrors

# process(text, *args) -> (new text or None when removed, [{"rule", "score", "action"}, ...])
Process = Callable[..., tuple["str | None", list[dict]]]


def run_document_pass(
    command: str, inputs: Sequence[str], out_dir: str | Path, settings: dict, process: Process,
    process_args: tuple, *, text_key: str = "text", workers: int = 1, on_error: str = "skip",
    force: bool = False, ranks: runner.Ranks | None = None,
) -> list[dict]:
    """Apply `process` to every document of `inputs`; returns every shard's counts (on every rank)."""
    ranks = ranks or runner.Ranks()
    out = Path(out_dir)
    shards = plan_shards(inputs, out)
    settings = {**settings, "text_key": text_key, "on_error": on_error}
    recipe = {"command": command, "settings": settings, "inputs": [runner.input_id(s.path) for s in shards]}
    ranks.on_rank0(lambda: runner.prepare_out_dir(out, recipe, force))
    tasks = [(s, str(out), runner.shard_recipe(s, command, settings), process, process_args, text_key, on_error)
             for s in ranks.mine(shards)]
    gathered = [c for part in ranks.everywhere(lambda: runner.map_shards(_shard_task, tasks, workers)) for c in part]
    order = [s.label for s in shards]
    return sorted(gathered, key=lambda c: order.index(c["shard"]))


def _shard_task(shard: Shard, out_dir: str, recipe: dict, process: Process, args: tuple, text_key: str,
                on_error: str) -> dict:
    out = Path(out_dir)
    done = runner.finished_shard(out, shard, recipe)
    if done is not None:
        return done
    counts = runner.new_counts(shard)
    errors = ReadErrors(on_error=on_error)
    with runner.shard_outputs(out, shard) as sink:
        for loc, record, text in iter_documents(shard.path, text_key, errors):
            n = count_words(text)
            counts["documents"] += 1
            counts["words_in"] += n
            new_text, entries = process(text, *args)
            for entry in entries:
                sink.record({"id": shard.doc_id(loc), **entry, "words": n})
                runner.count_rule(counts, entry["rule"], n if new_text is None else max(n - count_words(new_text), 0))
            if new_text is None:
                counts["removed"] += 1
                continue
            if new_text != text:
                counts["changed"] += 1
                record = {**record, text_key: new_text}
            sink.keep(dumps_record(record))
            counts["kept"] += 1
            counts["words_kept"] += count_words(new_text) if new_text != text else n
    counts["malformed"] = errors.count
    return runner.finish_shard(out, shard, recipe, sink, counts)


def apply_rules(text: str, rules: tuple[str, ...], languages: tuple[str, ...], min_lang_score: float,
                candidates: tuple[str, ...]) -> tuple[str | None, list[dict]]:
    """The `filter` command's process: rules in the order given; the first failing rule removes."""
    from auroragpt.data.curate import filters, language, pii

    entries: list[dict[str, Any]] = []
    for rule in rules:
        failed: tuple[str, float] | None = None
        if rule == "gopher":
            failed = filters.gopher_quality(text)
        elif rule == "repetition":
            failed = filters.gopher_repetition(text)
        elif rule == "stopwords":
            failed = filters.stop_words(text)
        elif rule == "c4":
            new, dropped = filters.c4_lines(text)
            if dropped > 0 and new.strip():
                entries.append({"rule": "c4:lines", "score": round(dropped, 4), "action": "changed"})
            text = new
            failed = filters.c4_document(text)
        elif rule == "lang":
            lang, prob = language.identify(text, candidates or None)
            if lang not in languages or prob < min_lang_score:
                failed = f"lang:{lang}", round(prob, 4)
        elif rule == "pii":
            text, found = pii.mask_pii(text)
            if any(found.values()):
                entries.append({"rule": "pii", "score": sum(found.values()), "action": "masked", **found})
        if failed is not None:
            entries.append({"rule": failed[0], "score": failed[1], "action": "removed"})
            return None, entries
    return text, entries


RULES = ("gopher", "repetition", "stopwords", "c4", "lang", "pii")
