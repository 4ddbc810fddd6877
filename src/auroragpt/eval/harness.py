"""lm-evaluation-harness over our models: an `LM` adapter and an offline `simple_evaluate` runner.

The harness speaks text; the adapter turns its three request kinds into token work on our model:
`loglikelihood` (score a continuation), `loglikelihood_rolling` (score a whole document in
windows of the context length) and `generate_until` (greedy or sampled text up to stop strings,
through `auroragpt.model.generate`). Tasks come from YAML files in `--include-path`, so compute
nodes without internet can run them over local data files.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from auroragpt.errors import ConfigError
from auroragpt.log import get_logger

log = get_logger(__name__)

try:  # lm-eval is an optional extra; the adapter class only exists when it is installed.
    from lm_eval.api.model import LM as _HarnessLM
except ImportError:  # pragma: no cover - exercised only without the extra
    _HarnessLM = object


def _split_trailing_space(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace into the continuation, so BPE merges it as in training."""
    stripped = context.rstrip()
    if len(stripped) == len(context):
        return context, continuation
    return stripped, context[len(stripped):] + continuation


class AuroraLM(_HarnessLM):
    """`lm_eval.api.model.LM` for a `GPT` plus a `TextTokenizer` (auroragpt.data.tokenizer)."""

    def __init__(self, model: torch.nn.Module, tokenizer, batch_size: int = 8, max_length: int | None = None,
                 max_gen_toks: int = 256) -> None:
        if _HarnessLM is object:
            raise ConfigError("lm-eval is not installed", hint="pip install 'auroragpt[eval]'")
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.max_length = int(max_length or model.cfg.max_seq_len)
        self.max_gen_toks = max_gen_toks
        self._model_device = next(model.parameters()).device

    # ---- token-level scoring -------------------------------------------------------------

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            return [self.tokenizer.eod_id], self.tokenizer.encode(continuation)
        context, continuation = _split_trailing_space(context, continuation)
        whole = self.tokenizer.encode(context + continuation)
        ctx = self.tokenizer.encode(context)
        # A merge across the boundary can shorten the context's share; keep at least one target.
        ctx_len = min(len(ctx), len(whole) - 1) if len(whole) > 1 else len(ctx)
        return whole[:ctx_len], whole[ctx_len:]

    @torch.inference_mode()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum of log-probs, all greedy) of each continuation given its context, batched by length."""
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            inputs, spans = [], []
            for i in chunk:
                ctx, cont = pairs[i]
                if not cont:
                    raise ConfigError("lm-eval asked to score an empty continuation")
                seq = (ctx + cont)[-(self.max_length + 1):]
                inputs.append(seq[:-1])
                spans.append(min(len(cont), len(seq) - 1))
            width = max(len(x) for x in inputs)
            # Right padding is invisible to causal attention over the real (left) positions.
            batch = torch.zeros(len(inputs), width, dtype=torch.long, device=self._model_device)
            for row, seq in enumerate(inputs):
                batch[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            logprobs = F.log_softmax(self.model(batch).float(), dim=-1)
            for row, i in enumerate(chunk):
                length, n = len(inputs[row]), spans[row]
                ctx, cont = pairs[i]
                target = torch.tensor(cont[-n:], dtype=torch.long, device=self._model_device)
                window = logprobs[row, length - n:length]
                score = window.gather(-1, target[:, None]).sum().item()
                greedy = bool((window.argmax(-1) == target).all())
                results[i] = (score, greedy)
        return results  # type: ignore[return-value]

    # ---- the harness interface -----------------------------------------------------------

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = [self._encode_pair(*req.args) for req in requests]
        results = self._score(pairs)
        for req, result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", req.args, result)
        return results

    def loglikelihood_rolling(self, requests) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        totals = []
        for req in requests:
            (text,) = req.args[:1]
            tokens = self.tokenizer.encode(text)
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=tokens, prefix_token=self.tokenizer.eod_id, max_seq_len=self.max_length, context_len=1)]
            total = sum(score for score, _ in self._score(windows)) if windows else 0.0
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            totals.append(total)
        return totals

    def _generation_settings(self, context: str, gen_kwargs: dict | None) -> tuple[list[int], tuple, list[str]]:
        """Prompt ids, the sampling settings (hashable, to batch equal ones) and the stop strings."""
        kwargs = dict(gen_kwargs or {})
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = max(0, min(int(kwargs.get("max_gen_toks", self.max_gen_toks)), self.max_length - 1))
        do_sample = bool(kwargs.get("do_sample", False))
        temperature = float(kwargs.get("temperature", 1.0)) if do_sample else 0.0
        settings = (max_new, temperature, float(kwargs.get("top_p", 1.0)), int(kwargs.get("top_k", 0) or 0),
                    kwargs.get("seed"))
        ids = self.tokenizer.encode(context) if context else [self.tokenizer.eod_id]
        return ids[-(self.max_length - max_new):], settings, until

    def generate_until(self, requests) -> list[str]:
        from auroragpt.model.generate import generate

        prepared = [self._generation_settings(*req.args) for req in requests]
        groups: dict[tuple, list[int]] = {}
        for i, (_, settings, _) in enumerate(prepared):
            groups.setdefault(settings, []).append(i)
        outputs: list[str] = [""] * len(requests)
        for (max_new, temperature, top_p, top_k, seed), members in groups.items():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                new = generate(self.model, [prepared[i][0] for i in chunk], max_new, temperature=temperature,
                               top_p=top_p, top_k=top_k, stop_ids=(self.tokenizer.eod_id,), seed=seed)
                for i, tokens in zip(chunk, new):
                    text = self.tokenizer.decode(tokens)
                    for stop in prepared[i][2]:
                        if stop and stop in text:
                            text = text[:text.index(stop)]
                    outputs[i] = text
        for req, text in zip(requests, outputs):
            self.cache_hook.add_partial("generate_until", req.args, text)
        return outputs


# The switches of the Hugging Face libraries lm-eval loads data and metrics through. They read
# them when imported, so flags of modules already imported are set as well (and restored after).
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE")
_OFFLINE_FLAGS = (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                  ("datasets.config", "HF_DATASETS_OFFLINE"), ("evaluate.config", "HF_EVALUATE_OFFLINE"))


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """Within the block, hub, datasets, evaluate and transformers read local files and caches only."""
    saved_env = {name: os.environ.get(name) for name in _OFFLINE_ENV}
    os.environ.update({name: "1" for name in _OFFLINE_ENV})
    saved_flags = []
    for module_name, attr in _OFFLINE_FLAGS:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attr):
            saved_flags.append((module, attr, getattr(module, attr)))
            setattr(module, attr, True)
    try:
        yield
    finally:
        for module, attr, value in reversed(saved_flags):
            setattr(module, attr, value)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_harness(model: torch.nn.Module, tokenizer, tasks: list[str], include_path: str | os.PathLike | None = None,
                num_fewshot: int | None = None, limit: float | None = None, batch_size: int = 8,
                include_default_tasks: bool = False, seed: int = 1234, allow_network: bool = False) -> dict:
    """Run `lm_eval.simple_evaluate` on `tasks`; returns the harness's results dict (JSON-ready).

    Nothing is downloaded unless `allow_network`: tasks come from `include_path` (and lm-eval's
    built-in tasks only with `include_default_tasks`, their data then read from the local cache).
    """
    if include_path is None and not include_default_tasks:
        raise ConfigError(
            f"no task source for {', '.join(tasks)}: lm-eval's built-in tasks download their data from the "
            "Hugging Face Hub, and eval never uses the network unless asked",
            hint="pass --include-path FOLDER (task YAML files over local data), or --include-default-tasks to "
            "use the built-in tasks from the local Hugging Face cache (add --allow-network to download)")
    if allow_network:
        return _run_harness(model, tokenizer, tasks, include_path, num_fewshot, limit, batch_size,
                            include_default_tasks, seed)
    with offline_hub():
        return _run_harness(model, tokenizer, tasks, include_path, num_fewshot, limit, batch_size,
                            include_default_tasks, seed)


def _run_harness(model: torch.nn.Module, tokenizer, tasks: list[str], include_path: str | os.PathLike | None,
                 num_fewshot: int | None, limit: float | None, batch_size: int, include_default_tasks: bool,
                 seed: int) -> dict:
    try:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError("lm-eval is not installed", hint="pip install 'auroragpt[eval]'") from None
    if include_path is not None and not Path(include_path).is_dir():
        raise ConfigError(f"--include-path {include_path} is not a folder", hint="point at a folder of task YAML files")
    manager = TaskManager(include_path=str(include_path) if include_path else None,
                          include_defaults=include_default_tasks)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        broken = _yaml_problems(include_path) if include_path else []
        raise ConfigError(f"unknown lm-eval task(s) {unknown}"
                          + (f"; these task files could not be read: {'; '.join(broken)}" if broken else ""),
                          hint="check the task names in the YAML files under --include-path")
    try:  # load the tasks' data now, so a missing file is one clear error rather than a harness traceback
        manager.load(tasks)
    except Exception as err:  # noqa: BLE001 - datasets and the harness raise many kinds for bad task data
        raise ConfigError(f"lm-eval could not load the data of task(s) {tasks}: {type(err).__name__}: {err}",
                          hint="check dataset_path / data_files in the task YAML (paths are read locally; "
                          "nothing is downloaded without --allow-network)") from None
    lm = AuroraLM(model, tokenizer, batch_size=batch_size)
    results = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, num_fewshot=num_fewshot, limit=limit,
                              log_samples=False, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                              fewshot_random_seed=seed, bootstrap_iters=0)
    if results is None:  # non-zero ranks of a distributed harness run get None
        return {}
    return json.loads(json.dumps({k: results[k] for k in ("results", "versions", "n-shot", "configs") if k in results},
                                 default=str))


def _yaml_problems(folder: str | os.PathLike) -> list[str]:
    """`file:line: problem` for task YAML files that do not parse (lm-eval skips them silently)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # lm-eval's !function tags
    problems = []
    for path in sorted(Path(folder).rglob("*.yaml")):
        try:
            yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 - SafeLoader subclass
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problems.append(f"{where}: {getattr(err, 'problem', None) or err}")
    return problems


def harness_table(results: dict) -> str:
    """The harness's own markdown table of metrics per task."""
    from lm_eval.utils import make_table

    return make_table(results)
