"""`data report`: kept and removed words (our token count) per rule and per corpus, as a table and a
PNG, and a data-file-list whose weights are the kept words of each shard."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from auroragpt.atomic import write_atomically
from auroragpt.data.curate.ledger import run_recipe, shard_counts


def summarize(out_dir: str | Path) -> dict:
    """{"command", "by_rule": {rule: {documents, words}}, "by_corpus": {corpus: {...}}, "total": {...}}."""
    recipe = run_recipe(out_dir)
    shards = shard_counts(out_dir)
    by_rule: dict[str, dict[str, int]] = defaultdict(lambda: {"documents": 0, "words": 0})
    by_corpus: dict[str, dict[str, int]] = defaultdict(lambda: {"documents": 0, "kept": 0, "words_in": 0, "words_kept": 0})
    total = {"documents": 0, "kept": 0, "removed": 0, "changed": 0, "words_in": 0, "words_kept": 0, "malformed": 0}
    for c in shards:
        for rule, v in c["rules"].items():
            by_rule[rule]["documents"] += v["documents"]
            by_rule[rule]["words"] += v["words"]
        corpus = by_corpus[c["corpus"]]
        for key in ("documents", "kept", "words_in", "words_kept"):
            corpus[key] += c[key]
        for key in total:
            total[key] += c[key]
    return {"command": recipe["command"], "by_rule": dict(sorted(by_rule.items())),
            "by_corpus": dict(sorted(by_corpus.items())), "shards": shards, "total": total}


def print_tables(summary: dict, out_dir: str | Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = summary["total"]
    rules = Table(title=f"{out_dir} ({summary['command']}): documents removed or changed, and words they lost, per rule")
    for name in ("rule", "documents", "words", "share of words"):
        rules.add_column(name, justify="left" if name == "rule" else "right")
    for rule, v in summary["by_rule"].items():
        rules.add_row(rule, f"{v['documents']:,}", f"{v['words']:,}", f"{v['words'] / max(t['words_in'], 1):.2%}")
    console.print(rules)
    corpora = Table(title="per corpus")
    for name in ("corpus", "documents", "kept", "words in", "words kept", "kept share"):
        corpora.add_column(name, justify="left" if name == "corpus" else "right")
    for corpus, v in summary["by_corpus"].items():
        corpora.add_row(corpus, f"{v['documents']:,}", f"{v['kept']:,}", f"{v['words_in']:,}", f"{v['words_kept']:,}",
                        f"{v['words_kept'] / max(v['words_in'], 1):.2%}")
    console.print(corpora)
    console.print(f"total: {t['documents']:,} documents, {t['kept']:,} kept, {t['removed']:,} removed, "
                  f"{t['changed']:,} changed; {t['words_kept']:,} of {t['words_in']:,} words kept; "
                  f"{t['malformed']:,} malformed input lines skipped")


def write_png(summary: dict, path: str | Path) -> Path:
    """Two bar charts: kept vs removed words per corpus, removed words per rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(summary["by_corpus"])
    kept = [summary["by_corpus"][c]["words_kept"] for c in names]
    gone = [summary["by_corpus"][c]["words_in"] - summary["by_corpus"][c]["words_kept"] for c in names]
    a.bar(names, kept, label="kept")
    a.bar(names, gone, bottom=kept, label="removed")
    a.set_title("words per corpus")
    a.legend()
    a.tick_params(axis="x", rotation=45)
    rules = list(summary["by_rule"])
    b.barh(rules, [summary["by_rule"][r]["words"] for r in rules])
    b.set_title("words removed or changed per rule")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_file_list(summary: dict, out_dir: str | Path, path: str | Path, prefix_root: str | None = None) -> Path:
    """`WEIGHT PREFIX CORPUS` lines, weight = kept words of the shard, PREFIX = where
    `data tokenize OUT/LABEL.jsonl --output-prefix PREFIX` would put it (PREFIX_ROOT/LABEL)."""
    root = Path(prefix_root) if prefix_root else Path(out_dir)
    lines = ["# written by `auroragpt data report`: weights are the kept words of each curated shard"]
    for c in summary["shards"]:
        if c["words_kept"] > 0:
            lines.append(f"{c['words_kept']} {root / c['shard']} {c['corpus']}")
    return write_atomically(path, "\n".join(lines) + "\n")
