"""What a loaded checkpoint says about its origin: tokenizer, step, tokens seen, data mix.

`load_inference_model` returns a training checkpoint's meta.json or, for a model folder, its whole
config.json (with the training metadata nested under "meta"). Eval, export and serve want the same
few facts from either; this is the one place that reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Provenance:
    source: str
    tokenizer_path: Path | None = None
    step: int | None = None
    tokens_seen: int | None = None
    data_mix: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def card_meta(self) -> dict[str, Any]:
        """The fields a model card and auroragpt_meta.json record."""
        out: dict[str, Any] = {"source": self.source, "step": self.step, "tokens_seen": self.tokens_seen,
                               "data_mix": self.data_mix}
        out.update(self.extra)
        return {k: v for k, v in out.items() if v is not None}


def provenance(meta: dict[str, Any], path: str | os.PathLike) -> Provenance:
    """Facts from `load_inference_model(path)`'s metadata, whichever kind of checkpoint `path` was."""
    path = Path(path)
    folder_format = isinstance(meta.get("format"), str) and meta["format"].startswith("auroragpt-model-folder")
    inner = (meta.get("meta") or {}) if folder_format else meta
    tokenizer = None
    if folder_format and meta.get("tokenizer") and (path / meta["tokenizer"]).is_file():
        tokenizer = path / meta["tokenizer"]
    elif inner.get("tokenizer") and Path(inner["tokenizer"]).exists():
        tokenizer = Path(inner["tokenizer"])
    data = inner.get("data") if isinstance(inner.get("data"), dict) else {}
    mix = data.get("mix") or inner.get("data_mix")
    extra = {k: inner[k] for k in ("imported_from", "checkpoint") if k in inner}
    return Provenance(source=str(path), tokenizer_path=tokenizer, step=inner.get("step"),
                      tokens_seen=inner.get("tokens_seen"), data_mix=mix, extra=extra)
