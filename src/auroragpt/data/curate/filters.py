"""Quality heuristics of Gopher (Rae et al. 2021, quality and repetition) and C4 (Raffel et al. 2020).

Each document rule returns None when the document passes, else (rule name, score) with the value
that failed it. `c4_lines` changes text (drops lines) and reports the share of lines dropped.
Thresholds are the published ones.
"""

from __future__ import annotations

import re
from collections import Counter

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("•", "-", "*", "‣", "◦", "⁃", "·")
_WORD = re.compile(r"\S+")
_ALPHA = re.compile(r"[^\W\d_]")
_TERMINAL = ('.', '!', '?', '"', "'", '”')
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
TOP_NGRAM = {2: 0.20, 3: 0.18, 4: 0.16}
DUP_NGRAM = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

Result = tuple[str, float] | None


def gopher_quality(text: str) -> Result:
    """Word count, mean word length, symbol ratios, bullets, ellipses, alphabetic words, stop words."""
    ws = _WORD.findall(text)
    n = len(ws)
    if not 50 <= n <= 100_000:
        return "gopher:word_count", float(n)
    mean = sum(len(w) for w in ws) / n
    if not 3 <= mean <= 10:
        return "gopher:mean_word_length", round(mean, 3)
    symbols = (text.count("#") + text.count("...") + text.count("…")) / n
    if symbols > 0.1:
        return "gopher:symbol_ratio", round(symbols, 3)
    lines = [line for line in text.splitlines() if line.strip()] or [""]
    bullets = sum(line.lstrip().startswith(BULLETS) for line in lines) / len(lines)
    if bullets > 0.9:
        return "gopher:bullet_lines", round(bullets, 3)
    ellipsis = sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines)
    if ellipsis > 0.3:
        return "gopher:ellipsis_lines", round(ellipsis, 3)
    alpha = sum(bool(_ALPHA.search(w)) for w in ws) / n
    if alpha < 0.8:
        return "gopher:alphabetic_words", round(alpha, 3)
    return stop_words(text, ws)


def stop_words(text: str, ws: list[str] | None = None) -> Result:
    """At least two distinct English stop words (the Gopher rule; use it only on English text)."""
    found = {w.lower().strip(".,;:!?\"'()") for w in (ws if ws is not None else _WORD.findall(text))} & STOP_WORDS
    return None if len(found) >= 2 else ("gopher:stop_words", float(len(found)))


def _dup_fraction(items: list[str]) -> tuple[float, float]:
    """(share of items that repeat an earlier one, share of characters in them)."""
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    dup = dup_chars = 0
    for item in items:
        if item in seen:
            dup += 1
            dup_chars += len(item)
        seen.add(item)
    total = sum(len(i) for i in items) or 1
    return dup / len(items), dup_chars / total


def gopher_repetition(text: str) -> Result:
    """Repeated lines and paragraphs, the most frequent n-gram, and characters in repeated n-grams."""
    lines = [x for x in text.split("\n") if x.strip()]
    paragraphs = [x for x in re.split(r"\n{2,}", text) if x.strip()]
    for name, items in (("lines", lines), ("paragraphs", paragraphs)):
        frac, chars = _dup_fraction(items)
        if frac > 0.3:
            return f"gopher:dup_{name}", round(frac, 3)
        if chars > 0.2:
            return f"gopher:dup_{name}_chars", round(chars, 3)
    ws = _WORD.findall(text.lower())
    total = sum(len(w) for w in ws) or 1
    for n, limit in TOP_NGRAM.items():
        grams = Counter(tuple(ws[i:i + n]) for i in range(len(ws) - n + 1))
        if grams:
            gram, count = grams.most_common(1)[0]
            share = sum(len(w) for w in gram) * count / total
            if count > 1 and share > limit:
                return f"gopher:top_{n}gram", round(share, 3)
    for n, limit in DUP_NGRAM.items():
        covered = bytearray(len(ws))
        seen: set[tuple] = set()
        for i in range(len(ws) - n + 1):
            gram = tuple(ws[i:i + n])
            if gram in seen:
                covered[i:i + n] = b"\x01" * n
            seen.add(gram)
        share = sum(len(w) for w, c in zip(ws, covered) if c) / total
        if share > limit:
            return f"gopher:dup_{n}gram", round(share, 3)
    return None


def c4_lines(text: str) -> tuple[str, float]:
    """C4's line rules: keep lines ending in terminal punctuation, with >= 3 words, without
    'javascript' or cookie/privacy boilerplate. Returns (new text, share of lines dropped)."""
    lines = text.splitlines()
    kept = []
    for line in lines:
        s = line.strip()
        low = s.lower()
        if (s.endswith(_TERMINAL) and len(s.split()) >= 3 and "javascript" not in low
                and not any(p in low for p in _POLICY)):
            kept.append(s)
    dropped = (len(lines) - len(kept)) / len(lines) if lines else 0.0
    return "\n".join(kept), dropped


def c4_document(text: str) -> Result:
    """C4's page rules (after the line rules): no 'lorem ipsum', no '{', at least 3 sentences."""
    low = text.lower()
    if "lorem ipsum" in low:
        return "c4:lorem_ipsum", 1.0
    if "{" in text:
        return "c4:curly_bracket", 1.0
    sentences = len(re.findall(r"[.!?]+(?:\s|$)", text))
    if sentences < 3:
        return "c4:sentences", float(sentences)
    return None
