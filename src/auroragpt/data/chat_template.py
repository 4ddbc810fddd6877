"""Chat templates that return token ids and a loss mask built from the template's own spans.

A conversation is rendered as alternating spans of text: prompt spans (system, user, the
assistant header) and assistant spans (an assistant message's content and its end-of-turn
token). Each span is tokenized on its own, so the loss mask is exact by construction and never
recovered by searching strings later.

Two kinds of template:
- `default`, for tokenizers trained here: `<|user|>\\n...\\n<|assistant|>\\n` headers as plain text,
  each assistant turn ended by the tokenizer's end-of-document token (what generation stops on).
- a Jinja `chat_template` (a Hugging Face tokenizer folder's `tokenizer_config.json`, or a
  `.jinja` file). Its spans come from rendering growing prefixes of the conversation: the text a
  template adds for assistant message i, after the generation prompt, is that turn's span.

`lint_template` refuses a template whose assistant end-of-turn token falls outside the loss mask
(the model would never learn to stop), before any data is tokenized.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from auroragpt.errors import DataError

ROLES = ("system", "user", "assistant")
Spans = list[tuple[str, bool]]  # (text, trained?)


@dataclass
class ChatTemplate:
    """Renders messages into (ids, mask). `source` is "default", "hf" or a .jinja file path."""

    source: str
    text: str  # the Jinja source ("" for the default template)
    eot_id: int  # the assistant end-of-turn token

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.source}\n{self.text}\neot={self.eot_id}".encode()).hexdigest()

    def spans(self, messages: Sequence[dict[str, Any]], tokenizer) -> Spans:
        if not self.text:
            return _default_spans(messages, tokenizer)
        return _jinja_spans(self.text, messages, tokenizer)

    def render(self, messages: Sequence[dict[str, Any]], tokenizer) -> tuple[list[int], list[int]]:
        """Token ids and a 0/1 mask (1: the token is a training target) of one conversation."""
        return encode_spans(self.spans(messages, tokenizer), tokenizer)

    def prompt_ids(self, messages: Sequence[dict[str, Any]], tokenizer) -> list[int]:
        """Ids of the conversation so far plus the assistant header: what generation continues."""
        if not self.text:
            spans = _default_spans(messages, tokenizer) + [(_header("assistant"), False)]
            return encode_spans(spans, tokenizer)[0]
        return tokenizer.encode(_jinja_render(self.text, messages, tokenizer, add_generation_prompt=True))


def _header(role: str) -> str:
    return f"<|{role}|>\n"


def _default_spans(messages: Sequence[dict[str, Any]], tokenizer) -> Spans:
    eot = tokenizer.decode([tokenizer.eod_id])
    spans: Spans = []
    for m in messages:
        if m["role"] == "assistant":
            spans += [(_header("assistant"), False), (m["content"] + eot, True), ("\n", False)]
        else:
            spans.append((_header(m["role"]) + m["content"] + "\n", False))
    return spans


def _jinja_render(text: str, messages, tokenizer, add_generation_prompt: bool) -> str:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)

    def raise_exception(message: str) -> None:
        raise DataError(f"the chat template refused the conversation: {message}")

    env.globals["raise_exception"] = raise_exception
    eos = tokenizer.decode([tokenizer.eod_id])
    bos = tokenizer.decode([tokenizer.bos_id]) if tokenizer.bos_id is not None else ""
    try:
        return env.from_string(text).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                            eos_token=eos, bos_token=bos)
    except jinja2.TemplateError as err:
        raise DataError(f"the chat template failed to render: {err}") from None


def _jinja_spans(text: str, messages, tokenizer) -> Spans:
    spans: Spans = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _jinja_render(text, messages[:i], tokenizer, add_generation_prompt=True)
        after = _jinja_render(text, messages[: i + 1], tokenizer, add_generation_prompt=False)
        if not (before.startswith(done) and after.startswith(before)):
            raise DataError("the chat template is not prefix-stable (rendering more messages changes earlier text), "
                            "so assistant spans cannot be told apart",
                            hint="use a template whose output for messages[:i] is a prefix of that for messages[:i+1]")
        spans += [(before[len(done):], False), (after[len(before):], True)]
        done = after
    full = _jinja_render(text, messages, tokenizer, add_generation_prompt=False)
    if full[len(done):]:
        spans.append((full[len(done):], False))
    return spans


def encode_spans(spans: Spans, tokenizer) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    mask: list[int] = []
    for text, trained in spans:
        if not text:
            continue
        piece = tokenizer.encode(text)
        ids += piece
        mask += [int(trained)] * len(piece)
    return ids, mask


def load_chat_template(source: str, tokenizer) -> ChatTemplate:
    """"default", "hf" (the tokenizer folder's chat_template) or a path to a .jinja file; linted."""
    if source == "default":
        template = ChatTemplate("default", "", tokenizer.eod_id)
    elif source == "hf":
        folder = Path(tokenizer.path)
        folder = folder if folder.is_dir() else folder.parent
        config = folder / "tokenizer_config.json"
        try:
            text = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError):
            text = None
        if isinstance(text, list):  # [{"name": "default", "template": ...}, ...]
            text = next((t.get("template") for t in text if t.get("name") == "default"), None)
        if not isinstance(text, str) or not text:
            raise DataError(f"{config}: no chat_template in this tokenizer folder",
                            hint="pass --chat-template default or a .jinja file")
        template = ChatTemplate("hf", text, tokenizer.eod_id)
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"chat template {source}: not 'default', 'hf' or a readable .jinja file")
        template = ChatTemplate(str(path.resolve()), path.read_text(encoding="utf-8"), tokenizer.eod_id)
    lint_template(template, tokenizer)
    return template


_PROBE = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say yes."},
          {"role": "assistant", "content": "yes"}, {"role": "user", "content": "Again."},
          {"role": "assistant", "content": "yes"}]


def _special_ids(tokenizer) -> set[int]:
    added = tokenizer.backend.get_added_tokens_decoder()
    return {int(i) for i, tok in added.items() if getattr(tok, "special", True)} | {tokenizer.eod_id}


def lint_template(template: ChatTemplate, tokenizer) -> None:
    """Refuse a template unless every assistant turn ends, inside the loss mask, on a special token
    (trailing whitespace after it, as in ChatML's "<|im_end|>\n", is allowed)."""
    ids, mask = template.render(_PROBE, tokenizer)
    special = _special_ids(tokenizer)
    runs: list[list[int]] = []
    for i, m in enumerate(mask):
        if m:
            if i == 0 or not mask[i - 1]:
                runs.append([])
            runs[-1].append(ids[i])
    where = f"chat template {template.source}"
    if len(runs) != 2:
        raise DataError(f"{where}: a probe conversation with 2 assistant turns got {len(runs)} trained spans",
                        hint="the template must render each assistant message as its own span")
    ends = []
    for run in runs:
        while len(run) > 1 and not tokenizer.decode([run[-1]]).strip():
            run.pop()
        ends.append(run[-1])
    if not all(t in special for t in ends):
        names = ", ".join(repr(tokenizer.decode([t])) for t in ends)
        raise DataError(
            f"{where}: the assistant end-of-turn token falls outside the loss mask (trained spans end on {names}, "
            "not a special token): a model trained on it never learns to stop",
            hint="end assistant turns with an end-of-turn special token (e.g. {{ eos_token }}) right after the content",
        )


def normalise_messages(value: Any, where: str) -> list[dict[str, str]]:
    """A message list checked for shape; a DataError naming `where` (file:line) otherwise."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: expected a non-empty list of messages")
    out = []
    for m in value:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: every message needs a role in {ROLES} and a string content, got {m!r:.80}")
        out.append({"role": m["role"], "content": m["content"]})
    return out
