"""The OpenAI wire format: request schemas, their checks, the chat template and response shapes.

Kept apart from the routes so the HTTP handlers and the batch runner build requests and answers
the same way. Parameters we do not implement (n > 1, logprobs, echo, tools, penalties) are
refused with a 400 naming them, never accepted and ignored. Types are strict, as OpenAI's are:
`"4"`, `true` or `4.5` are not a max_tokens, `"0.5"` is not a temperature.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from auroragpt.model.sampling_params import SEED_MAX, SEED_MIN, SamplingParams
from auroragpt.serve.events import StreamEvent

# Used when the tokenizer ships no chat template: role tags on their own lines.
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# With the default template a reply ends where the model starts the next turn on its own.
DEFAULT_CHAT_STOPS = ("<|user|>", "<|system|>")


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# Deeper JSON is refused before it reaches code that recurses over it (OpenAI bodies need < 10).
MAX_JSON_DEPTH = 64


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """Nesting depth of decoded JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def parse_json(raw: bytes | str, what: str = "the request body") -> Any:
    """Decoded JSON, or a 400 for text that is not JSON (NaN and Infinity included) or nests too deep."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        value = None
        too_deep = True
    except ValueError as err:
        raise APIError(400, f"{what} is not valid JSON: {err}", code="invalid_json") from None
    else:
        too_deep = _depth(value) > MAX_JSON_DEPTH
    if too_deep:
        raise APIError(400, f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")
    return value


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)  # an extension, as in vLLM; 0 = off
    ignore_eos: bool = False  # an extension, as in vLLM
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1
    logprobs: Any = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None


class CompletionRequest(_Common):
    prompt: str | list[int] | list[str]
    max_tokens: int | None = Field(16, ge=1)
    echo: bool = False
    best_of: int | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Any] | None = None


def validation_error(err: ValidationError) -> APIError:
    """The first schema problem as a 400 naming the field (OpenAI answers type errors with 400)."""
    first = err.errors()[0]
    loc = [str(p) for p in first.get("loc", ())]
    param = loc[0] if loc else None
    message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid value')}"
    if param == "seed":
        message = f"seed must be an integer in [{SEED_MIN}, {SEED_MAX}] (-2**63 .. 2**64-1)"
    return APIError(400, message, param=param, code="invalid_value")


def _refuse_unsupported(req: _Common) -> None:
    checks = [
        ("n", req.n != 1, "only n=1 is supported"),
        ("logprobs", req.logprobs not in (None, False, 0), "logprobs are not supported"),
        ("presence_penalty", req.presence_penalty != 0, "presence_penalty is not supported"),
        ("frequency_penalty", req.frequency_penalty != 0, "frequency_penalty is not supported"),
    ]
    if isinstance(req, CompletionRequest):
        checks += [("echo", req.echo, "echo is not supported"), ("best_of", req.best_of not in (None, 1), "best_of is not supported")]
    if isinstance(req, ChatRequest):
        checks.append(("tools", bool(req.tools), "tool calls are not supported"))
    for param, bad, message in checks:
        if bad:
            raise APIError(400, message, param=param, code="unsupported_parameter")


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > 4:
        raise APIError(400, "at most 4 stop sequences are allowed", param="stop")
    if any(not s for s in stops):
        raise APIError(400, "stop sequences must be non-empty", param="stop")
    return stops


def message_text(message: ChatMessage, index: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, f"messages[{index}]: only text content parts are supported", param=f"messages.{index}.content")
        parts.append(part["text"])
    return "".join(parts)


@dataclass
class Prepared:
    """A checked request, ready for the engine."""

    kind: Literal["completion", "chat"]
    prompt_ids: list[int]
    params: SamplingParams
    stream: bool
    include_usage: bool


@dataclass
class Limits:
    """Server-side caps on what one request may ask for."""

    max_tokens_cap: int
    context: int  # prompt + completion tokens
    model_name: str


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text`. Through `encode_batch` when the tokenizer has it: the Rust tokenizer's
    batch call releases the GIL and its single `encode` does not, which would stall the event loop
    for the seconds a megabyte prompt takes even when called from a worker thread."""
    batch = getattr(tokenizer, "encode_batch", None)
    return list(batch([text])[0]) if batch is not None else tokenizer.encode(text)


def prepare(kind: str, body: Any, tokenizer, render_chat, limits: Limits) -> Prepared:
    """Validate a decoded JSON body and turn it into prompt ids and sampling parameters."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        req = (ChatRequest if kind == "chat" else CompletionRequest).model_validate(body)
    except ValidationError as err:
        raise validation_error(err) from None
    _refuse_unsupported(req)
    if req.model is not None and req.model != limits.model_name:
        raise APIError(404, f"the model {req.model!r} does not exist; this server serves {limits.model_name!r}",
                       param="model", code="model_not_found")
    if kind == "chat":
        messages = [{"role": m.role, "content": message_text(m, i)} for i, m in enumerate(req.messages)]
        prompt_ids = encode(tokenizer, render_chat(messages))
        max_tokens = req.max_completion_tokens or req.max_tokens
    else:
        prompt = req.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise APIError(400, "only one prompt per request is supported", param="prompt")
            prompt = prompt[0]
        if isinstance(prompt, str):
            prompt_ids = encode(tokenizer, prompt)
        else:
            vocab = tokenizer.vocab_size
            if any(not 0 <= t < vocab for t in prompt):
                raise APIError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
            prompt_ids = list(prompt)
        max_tokens = req.max_tokens
    if not prompt_ids:
        raise APIError(400, "the prompt is empty", param="prompt")
    room = limits.context - len(prompt_ids)
    if room < 1:
        raise APIError(400, f"the prompt has {len(prompt_ids)} tokens; this model's context is {limits.context}",
                       param="prompt", code="context_length_exceeded")
    if max_tokens is None:
        max_tokens = min(room, limits.max_tokens_cap)
    if max_tokens > limits.max_tokens_cap:
        raise APIError(400, f"max_tokens={max_tokens} exceeds this server's cap of {limits.max_tokens_cap}",
                       param="max_tokens")
    if max_tokens > room:
        raise APIError(400, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds the context of "
                       f"{limits.context} tokens", param="max_tokens", code="context_length_exceeded")
    params = SamplingParams(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                            stop=_stops(req.stop) + (getattr(render_chat, "stops", ()) if kind == "chat" else ()),
                            seed=req.seed, ignore_eos=req.ignore_eos)
    include_usage = bool((req.stream_options or {}).get("include_usage"))
    return Prepared(kind, prompt_ids, params, req.stream, include_usage)


def new_id(kind: str) -> str:
    prefix = {"completion": "cmpl", "chat": "chatcmpl"}.get(kind, kind)
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def full_response(prepared: Prepared, rid: str, model: str, text: str, last: StreamEvent) -> dict:
    """A non-streamed answer, as /v1/completions or /v1/chat/completions returns it."""
    created = int(time.time())
    if prepared.kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": last.finish_reason}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": last.finish_reason}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice],
            "usage": usage(last.prompt_tokens, last.completion_tokens)}


def stream_chunk(prepared: Prepared, rid: str, model: str, text: str | None, finish_reason: str | None,
                 first: bool = False) -> dict:
    """One server-sent event's payload."""
    created = int(time.time())
    if prepared.kind == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text:
            delta["content"] = text
        elif first:
            delta["content"] = ""
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [choice]}
    choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
    return {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": [choice]}


def usage_chunk(prepared: Prepared, rid: str, model: str, last: StreamEvent) -> dict:
    obj = "chat.completion.chunk" if prepared.kind == "chat" else "text_completion"
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [],
            "usage": usage(last.prompt_tokens, last.completion_tokens)}


def special_tokens(tokenizer) -> dict[str, str]:
    """bos_token / eos_token strings for chat templates that use them (Llama's start with bos)."""
    backend = getattr(tokenizer, "backend", None)
    out = {}
    for name, attr in (("bos_token", "bos_id"), ("eos_token", "eod_id")):
        token_id = getattr(tokenizer, attr, None)
        token = backend.id_to_token(token_id) if backend is not None and token_id is not None else None
        if token:
            out[name] = token
    return out


def chat_renderer(template: str | None, bos_token: str = "", eos_token: str = ""):
    """A function rendering messages with a Jinja chat template (sandboxed) or the default one."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str):
        raise APIError(400, f"chat template: {message}")

    compiled = env.from_string(template or DEFAULT_CHAT_TEMPLATE)

    def render(messages: list[dict]) -> str:
        return compiled.render(messages=messages, add_generation_prompt=True, bos_token=bos_token,
                               eos_token=eos_token, raise_exception=raise_exception)

    render.stops = () if template else DEFAULT_CHAT_STOPS  # type: ignore[attr-defined]
    return render
