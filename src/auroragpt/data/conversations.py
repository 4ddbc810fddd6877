"""Chat, prompt/completion and preference records turned into token ids with a loss mask.

Record shapes (JSON lines or parquet rows):
- chat: `{"messages": [{"role", "content"}, ...]}`
- completion: `{"prompt": ..., "completion": ...}`
- preference: `{"prompt": ..., "chosen": ..., "rejected": ...}`
where each of prompt/completion/chosen/rejected is a string or a message list. Strings are
plain text (the completion, chosen or rejected text followed by the end-of-document token);
message lists go through the chat template. An example is one document of one sequence; a
preference pair is one document of two sequences (chosen, then rejected), so the Megatron
index itself keeps a pair together through merges and shuffles.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from auroragpt.data.chat_template import ChatTemplate, Spans, encode_spans, normalise_messages
from auroragpt.errors import DataError

FORMATS = ("text", "chat", "completion", "preference")
SEQUENCES_PER_DOCUMENT = {"chat": 1, "completion": 1, "preference": 2}


def _pair_spans(prompt: Any, answer: Any, template: ChatTemplate, tokenizer, where: str, key: str) -> Spans:
    if isinstance(prompt, str) and isinstance(answer, str):
        eot = tokenizer.decode([tokenizer.eod_id])
        return [(prompt, False), (answer + eot, True)]
    if isinstance(answer, str):
        answer = [{"role": "assistant", "content": answer}]
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    messages = normalise_messages(prompt, f"{where} ({'prompt'})") + normalise_messages(answer, f"{where} ({key})")
    return template.spans(messages, tokenizer)


def example_sequences(record: dict, fmt: str, template: ChatTemplate, tokenizer, where: str) -> list[tuple[list[int], list[int]]]:
    """The (ids, mask) sequences of one record; DataError naming `where` when it holds no assistant token."""
    needed = {"chat": ("messages",), "completion": ("prompt", "completion"), "preference": ("prompt", "chosen", "rejected")}[fmt]
    missing = [k for k in needed if k not in record]
    if missing:
        raise DataError(f"{where}: no {', '.join(repr(k) for k in missing)} field for --format {fmt}")
    if fmt == "chat":
        spans_list = [template.spans(normalise_messages(record["messages"], where), tokenizer)]
    elif fmt == "completion":
        spans_list = [_pair_spans(record["prompt"], record["completion"], template, tokenizer, where, "completion")]
    else:
        spans_list = [_pair_spans(record["prompt"], record[k], template, tokenizer, where, k) for k in ("chosen", "rejected")]
    out = [encode_spans(spans, tokenizer) for spans in spans_list]
    for ids, mask in out:
        if not any(mask):
            raise DataError(f"{where}: example has no assistant tokens (nothing to train on)",
                            hint="every example needs an assistant message (or completion) with content; drop or fix this one")
    return out


def encode_records(records: list[tuple[int, dict]], file: str, fmt: str, template: ChatTemplate, tokenizer,
                   dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens, sequence lengths, mask) of every record in order; every document holds
    SEQUENCES_PER_DOCUMENT[fmt] sequences."""
    ids: list[int] = []
    mask: list[int] = []
    lengths: list[int] = []
    for line, record in records:
        for seq_ids, seq_mask in example_sequences(record, fmt, template, tokenizer, f"{file}:{line}"):
            ids += seq_ids
            mask += seq_mask
            lengths.append(len(seq_ids))
    return np.asarray(ids, dtype=dtype), np.asarray(lengths, dtype=np.int64), np.asarray(mask, dtype=np.uint8)


def mask_prefix(prefix: str) -> str:
    """Where the loss-mask sidecar of dataset `prefix` lives: an indexed dataset of uint8 0/1 values
    with the same sequences and documents as the tokens."""
    return prefix + ".lossmask"
