"""Offline language identification with the `langid` package (its model ships inside the wheel).

The identifier is built once per process (about a second) and kept; probabilities are normalised
so a score threshold means the same for every text.
"""

from __future__ import annotations

from typing import Sequence

from auroragpt.errors import DataError

_IDENTIFIER: dict = {}


def identifier(candidates: Sequence[str] | None = None):  # noqa: ANN201 (langid has no types)
    """The process's langid identifier, restricted to `candidates` when given."""
    key = tuple(sorted(candidates)) if candidates else ()
    if key not in _IDENTIFIER:
        try:
            from langid.langid import LanguageIdentifier, model
        except ImportError:
            raise DataError("language identification needs the 'langid' package",
                            hint="pip install 'auroragpt[curate]' (or pip install langid)") from None
        ident = LanguageIdentifier.from_modelstring(model, norm_probs=True)
        if key:
            unknown = sorted(set(key) - set(ident.nb_classes))
            if unknown:
                raise DataError(f"unknown language code(s) {', '.join(unknown)} for langid",
                                hint="use ISO 639-1 codes such as en, de, fr, es")
            ident.set_languages(list(key))
        _IDENTIFIER[key] = ident
    return _IDENTIFIER[key]


def identify(text: str, candidates: Sequence[str] | None = None) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the text's language."""
    lang, prob = identifier(candidates).classify(text)
    return str(lang), float(prob)
