"""Offline language identification with the `langid` package (its model ships inside the wheel).

The identifier is built once per process (a second or two: the model is unpacked from a string)
and kept; probabilities are normalised so a score threshold means the same for every text.
Language codes are checked against langid's list without loading the model.
"""

from __future__ import annotations

import importlib.util
from typing import Sequence

from auroragpt.errors import DataError

# langid 1.1.6's 97 languages (ISO 639-1)
LANGUAGES = frozenset(
    "af am an ar as az be bg bn br bs ca cs cy da de dz el en eo es et eu fa fi fo fr ga gl gu he hi hr ht hu hy id "
    "is it ja jv ka kk km kn ko ku ky la lb lo lt lv mg mk ml mn mr ms mt nb ne nl nn no oc or pa pl ps pt qu ro ru "
    "rw se si sk sl sq sr sv sw ta te th tl tr ug uk ur vi vo wa xh zh zu".split()
)
_IDENTIFIER: dict = {}


def check_languages(codes: Sequence[str], option: str) -> None:
    """A clear error for unknown codes or a missing `langid`, before any work starts."""
    unknown = sorted(set(codes) - LANGUAGES)
    if unknown:
        raise DataError(f"{option}: unknown language code(s) {', '.join(unknown)} for langid",
                        hint="use ISO 639-1 codes such as en, de, fr, es")
    if importlib.util.find_spec("langid") is None:
        raise DataError("language identification needs the 'langid' package",
                        hint="pip install 'auroragpt[curate]' (or pip install langid)")


def identifier(candidates: Sequence[str] | None = None):  # noqa: ANN201 (langid has no types)
    """The process's langid identifier, restricted to `candidates` when given."""
    key = tuple(sorted(candidates)) if candidates else ()
    if key not in _IDENTIFIER:
        check_languages(key, "--candidate-languages")
        from langid.langid import LanguageIdentifier, model

        ident = LanguageIdentifier.from_modelstring(model, norm_probs=True)
        if key:
            ident.set_languages(list(key))
        _IDENTIFIER[key] = ident
    return _IDENTIFIER[key]


def identify(text: str, candidates: Sequence[str] | None = None) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the text's language."""
    lang, prob = identifier(candidates).classify(text)
    return str(lang), float(prob)
