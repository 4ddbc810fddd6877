"""Tokenizers: load a `tokenizer.json` or a local Hugging Face tokenizer folder, or train a BPE.

Everything goes through the Hugging Face `tokenizers` library (fast, Rust). Nothing is ever
downloaded: a path that is neither a file nor a folder is an error.
"""

from __future__ import annotations

import json
import os
from itertools import chain
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from auroragpt.atomic import atomic_path
from auroragpt.errors import DataError

EOD_TOKEN = "<|endoftext|>"
# Names tried, in order, when a tokenizer folder does not say which token ends a document.
_EOD_CANDIDATES = (EOD_TOKEN, "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "[SEP]")
_BOS_CANDIDATES = ("<|begin_of_text|>", "<s>", "<bos>", "[CLS]")


class TextTokenizer:
    """A `tokenizers.Tokenizer` plus the ids the toolbox needs (end of document, begin of sequence)."""

    def __init__(self, tokenizer, path: Path, eod_id: int, bos_id: int | None) -> None:
        self._tok = tokenizer
        self.path = path
        self.eod_id = eod_id
        self.bos_id = bos_id

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def backend(self):
        """The underlying `tokenizers.Tokenizer`."""
        return self._tok

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
        return [enc.ids for enc in self._tok.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def encode_documents(self, texts: Sequence[str], dtype: np.dtype | str = np.int32) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize documents, each followed by the end-of-document id: (tokens, lengths) arrays."""
        # encode_batch_fast (tokenizers >= 0.21) skips the character offsets we never use.
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        encodings = encode(list(texts), add_special_tokens=False)
        eod = [self.eod_id]
        ids = [enc.ids for enc in encodings]
        lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
        total = int(lengths.sum())
        tokens = np.fromiter(chain.from_iterable(chain(x, eod) for x in ids), dtype=np.dtype(dtype), count=total)
        return tokens, lengths

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def __repr__(self) -> str:
        return f"TextTokenizer({str(self.path)!r}, vocab_size={self.vocab_size}, eod_id={self.eod_id})"


def _special_from_config(folder: Path, key: str) -> str | None:
    """The `eos_token`/`bos_token` named in a HF folder's tokenizer_config.json, if any."""
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get(key)
    except (json.JSONDecodeError, OSError, AttributeError):
        return None
    if isinstance(value, dict):  # {"content": "</s>", ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


def _first_known(tok, names: Iterable[str | None]) -> int | None:
    for name in names:
        if name and tok.token_to_id(name) is not None:
            return int(tok.token_to_id(name))
    return None


def load_tokenizer(path: str | os.PathLike) -> TextTokenizer:
    """Open a `tokenizer.json` file or a local Hugging Face tokenizer folder (never downloads)."""
    from tokenizers import Tokenizer

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        file = path / "tokenizer.json"
        if not file.is_file():
            vocab, merges = path / "vocab.json", path / "merges.txt"
            if vocab.is_file() and merges.is_file():
                from tokenizers import ByteLevelBPETokenizer

                tok = ByteLevelBPETokenizer(str(vocab), str(merges))._tokenizer
                return _wrap(tok, path, folder)
            raise DataError(
                f"{path}: no tokenizer.json (or vocab.json + merges.txt) in this folder",
                hint="save the tokenizer with a fast Hugging Face tokenizer, or train one with "
                "`auroragpt data train-tokenizer`",
            )
    elif path.is_file():
        file = path
    else:
        raise DataError(
            f"{path}: tokenizer not found",
            hint="give a tokenizer.json file or a local Hugging Face tokenizer folder (nothing is downloaded)",
        )
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as err:  # the Rust side raises plain Exception with a parse message
        raise DataError(f"{file}: not a valid tokenizer.json ({err})") from None
    return _wrap(tok, path, folder)


def _wrap(tok, path: Path, folder: Path) -> TextTokenizer:
    eod_id = _first_known(tok, (_special_from_config(folder, "eos_token"), *_EOD_CANDIDATES))
    if eod_id is None:
        raise DataError(
            f"{path}: cannot tell which token ends a document (none of {', '.join(_EOD_CANDIDATES)} "
            "is in the vocabulary and tokenizer_config.json names no eos_token)",
            hint=f"add an end-of-document special token such as {EOD_TOKEN!r} to the tokenizer",
        )
    bos_id = _first_known(tok, (_special_from_config(folder, "bos_token"), *_BOS_CANDIDATES))
    return TextTokenizer(tok, path, eod_id, bos_id)


def _iter_training_texts(texts_or_files: Iterable[str | os.PathLike], text_key: str) -> Iterable[str]:
    """Strings are text; `Path`s are corpus files or folders read with `auroragpt.data.readers`."""
    from auroragpt.data.readers import ReadErrors, iter_texts, list_input_files

    pending: list[Path] = []
    for item in texts_or_files:
        if isinstance(item, os.PathLike):
            pending.append(Path(item))
        else:
            yield item
    if pending:
        errors = ReadErrors(on_error="skip")
        for file in list_input_files(pending):
            yield from iter_texts(file, text_key=text_key, errors=errors)


def train_bpe(
    texts_or_files: Iterable[str | os.PathLike],
    vocab_size: int,
    out_path: str | os.PathLike,
    *,
    text_key: str = "text",
    min_frequency: int = 2,
) -> TextTokenizer:
    """Train a byte-level BPE with `<|endoftext|>` as its end-of-document token; save it atomically.

    `texts_or_files` mixes strings (used as text) and `Path`s (corpus files or folders).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if vocab_size < 257 + 1:
        raise DataError(f"vocab_size {vocab_size} is too small for a byte-level BPE", hint="use at least 258")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_iter_training_texts(texts_or_files, text_key), trainer=trainer)
    out_path = Path(out_path)
    if out_path.is_dir() or out_path.suffix != ".json":
        out_path = out_path / "tokenizer.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        tok.save(str(tmp))
    return load_tokenizer(out_path)
