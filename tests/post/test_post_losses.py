"""SFT and DPO losses: masked gradients, split invariance, hand-computed DPO variants, TRL as oracle."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from auroragpt.data.examples import IGNORE, decode_rows
from auroragpt.train.dpo import DPOObjective, dpo_losses, pack_targets, sequence_logps
from auroragpt.train.sft import SFTObjective, sft_loss_fn


def _tiny_model(vocab: int = 50, seed: int = 0, n_layers: int = 2, max_seq_len: int = 32):
    from auroragpt.model.gpt import GPT
    from auroragpt.model.presets import get_preset

    model = GPT(get_preset("tiny", n_layers=n_layers, vocab_size=vocab, max_seq_len=max_seq_len))
    model.init_weights(torch.Generator().manual_seed(seed))
    return model


def _single_runner(model):
    from auroragpt.parallel.layout import ParallelLayout, validate
    from auroragpt.parallel.parallelize import parallelize

    layout = validate(ParallelLayout(), 1, model.cfg, 8, 1)
    return parallelize(model, layout, None, device="cpu")


def _encoded_rows(n: int, width: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n, width), generator=g)
    mask = torch.rand(n, width, generator=g) < 0.5
    mask[:, 0] = False
    mask[:, 1] = True  # every row has a loss token
    return torch.where(mask, tokens, -tokens - 1)


def test_gradient_is_exactly_zero_at_masked_positions():
    rows = _encoded_rows(3, 9, 20, 0)
    tokens, targets = decode_rows(rows)
    logits = torch.randn(3, 8, 20, requires_grad=True)
    sft_loss_fn(1.0 / int((targets != IGNORE).sum()))(logits, targets).backward()
    masked = targets == IGNORE
    assert masked.any() and (~masked).any()
    assert torch.equal(logits.grad[masked], torch.zeros_like(logits.grad[masked]))
    assert (logits.grad[~masked].abs().sum(-1) > 0).all()


def test_sft_loss_and_gradient_do_not_depend_on_how_the_batch_is_split():
    """The same 8 rows as 1 x 8, 4 x 2 and 8 x 1 micro-batches: the global-token normalisation makes
    loss and gradients agree, where a per-micro-batch mean would not (rows have different counts)."""
    rows = _encoded_rows(8, 17, 50, 1)
    results = []
    for accum in (1, 4, 8):
        model = _tiny_model()
        runner = _single_runner(model)
        objective = SFTObjective(runner.layout)
        tokens, targets, loss_fn = objective.batch(iter(rows.chunk(accum)), accum)
        loss = runner.train_step(tokens, targets, loss_fn, grad_accum=accum)
        results.append((float(loss), [p.grad.clone() for p in model.parameters()]))
    _, targets = decode_rows(rows)
    logits = _tiny_model()(decode_rows(rows)[0])
    expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    for loss, grads in results:
        assert loss == pytest.approx(float(expected), abs=1e-6)
        for g, g0 in zip(grads, results[0][1]):
            torch.testing.assert_close(g, g0, rtol=1e-5, atol=1e-7)


def _h(pc, pr, rc, rr):
    return (pc - pr) - (rc - rr)


@pytest.mark.parametrize("loss", ["sigmoid", "robust", "hinge", "ipo"])
def test_dpo_losses_equal_hand_computed_values(loss):
    pc, pr, rc, rr = torch.tensor([-3.0, -1.0]), torch.tensor([-4.0, -0.5]), torch.tensor([-3.5, -1.2]), torch.tensor([-3.9, -0.9])
    beta, e = 0.5, 0.1
    got, chosen_r, rejected_r = dpo_losses(pc, pr, rc, rr, beta, loss, label_smoothing=e)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    for k in range(2):
        h = _h(float(pc[k]), float(pr[k]), float(rc[k]), float(rr[k]))
        want = {
            "sigmoid": -(1 - e) * math.log(sig(beta * h)) - e * math.log(sig(-beta * h)),
            "robust": (-(1 - e) * math.log(sig(beta * h)) + e * math.log(sig(-beta * h))) / (1 - 2 * e),
            "hinge": max(0.0, 1 - beta * h),
            "ipo": (h - 1 / (2 * beta)) ** 2,
        }[loss]
        assert float(got[k]) == pytest.approx(want, rel=1e-6)
        assert float(chosen_r[k]) == pytest.approx(beta * (float(pc[k]) - float(rc[k])), rel=1e-6)
        assert float(rejected_r[k]) == pytest.approx(beta * (float(pr[k]) - float(rr[k])), rel=1e-6)


class _SameModelReference:
    def __init__(self, model):
        self.model = model

    def logps(self, examples, tokens, targets, chunks):
        with torch.no_grad():
            return sequence_logps(self.model(tokens), targets)[0].double()


def _pair_rows(pairs: int, width: int, vocab: int, seed: int) -> torch.Tensor:
    rows = _encoded_rows(2 * pairs, width, vocab, seed)
    examples = torch.arange(pairs).repeat_interleave(2)[:, None]
    return torch.cat([rows, examples], dim=1)


def test_at_initialisation_sigmoid_loss_is_ln2_and_rewards_are_zero():
    model = _tiny_model()
    runner = _single_runner(model)
    objective = DPOObjective(runner.layout, _SameModelReference(model), beta=0.1)
    tokens, targets, loss_fn = objective.batch(iter([_pair_rows(4, 17, 50, 3)]), 1)
    loss = runner.train_step(tokens, targets, loss_fn)
    assert float(loss) == pytest.approx(math.log(2), abs=1e-6)
    m = objective.metrics()
    assert m["rewards_chosen"] == pytest.approx(0, abs=1e-6) and m["rewards_rejected"] == pytest.approx(0, abs=1e-6)
    assert m["reward_margin"] == pytest.approx(0, abs=1e-6)


def _hf_models(tmp_path, policy, reference):
    from transformers import AutoModelForCausalLM

    from auroragpt.export.hf import export_hf

    export_hf(policy.eval(), tmp_path / "policy")
    export_hf(reference.eval(), tmp_path / "reference")
    load = lambda name: AutoModelForCausalLM.from_pretrained(tmp_path / name, dtype=torch.float32)  # noqa: E731
    return load("policy"), load("reference")


@pytest.mark.parametrize("loss,smoothing,rpo", [("sigmoid", 0.0, 0.0), ("ipo", 0.0, 0.0), ("hinge", 0.0, 0.0),
                                                 ("robust", 0.2, 0.0), ("sigmoid", 0.0, 0.5)])
def test_dpo_loss_equals_trl_on_the_exported_model(tmp_path, loss, smoothing, rpo):
    """TRL's DPOTrainer computes the loss of the same fixed batch on the exported HF models."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer

    from auroragpt.data.tokenizer import train_bpe

    tok = train_bpe(["alpha beta gamma delta " * 20] * 20, 270, tmp_path / "tok.json")
    vocab = tok.vocab_size
    policy, reference = _tiny_model(vocab, seed=1), _tiny_model(vocab, seed=0)
    rows = _pair_rows(3, 13, vocab, 5)
    ours_rows = rows.clone()

    runner = _single_runner(policy)
    objective = DPOObjective(runner.layout, _SameModelReference(reference), beta=0.2, loss=loss,
                             label_smoothing=smoothing, rpo_alpha=rpo)
    tokens, targets, loss_fn = objective.batch(iter([ours_rows]), 1)
    ours = float(runner.train_step(tokens, targets, loss_fn))

    hf_policy, hf_reference = _hf_models(tmp_path, policy, reference)
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(tok.path), eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    types, weights = ([loss, "sft"], [1.0, rpo]) if rpo else ([loss], [1.0])
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.2, loss_type=types, loss_weights=weights,
                     label_smoothing=smoothing, report_to=[], use_cpu=True, per_device_train_batch_size=3,
                     bf16=False, fp16=False)  # TRL defaults to bf16 autocast; compare in fp32
    data = Dataset.from_list([{"prompt": "alpha", "chosen": " beta", "rejected": " gamma"}] * 3)
    trainer = DPOTrainer(model=hf_policy, ref_model=hf_reference, args=args, train_dataset=data, processing_class=hf_tok)
    full = rows[:, :-1]
    ids = torch.where(full >= 0, full, -full - 1)
    completion = (full >= 0).long()
    order = torch.cat([torch.arange(0, 6, 2), torch.arange(1, 6, 2)])  # TRL: [chosen..., rejected...]
    inputs = {"input_ids": ids[order], "attention_mask": torch.ones_like(ids[order]), "completion_mask": completion[order]}
    trainer.model.train()
    theirs = float(trainer._compute_loss(trainer.model, inputs, False))
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_reference_model_is_frozen_and_absent_from_the_optimizer(tmp_path):
    from types import SimpleNamespace

    from auroragpt.config import Config
    from auroragpt.export.hf import export_hf
    from auroragpt.train.optim import build_optimizer
    from auroragpt.train.reference import LiveReference, frozen_reference_model

    policy = _tiny_model()
    export_hf(_tiny_model().eval(), tmp_path / "init")  # the same weights as the policy
    cfg = Config()
    cfg.checkpoint.init_from = str(tmp_path / "init")
    runner = _single_runner(policy)
    reference = frozen_reference_model(cfg, runner, policy.cfg, SimpleNamespace(device=torch.device("cpu"), rank=0))
    assert not any(p.requires_grad for p in reference.parameters())
    optimizer = build_optimizer(runner.model_parts[0], cfg.optim)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not in_optimizer & {id(p) for p in reference.parameters()}
    objective = DPOObjective(runner.layout, LiveReference(reference), beta=0.1)
    tokens, targets, loss_fn = objective.batch(iter([_pair_rows(2, 17, 50, 4)]), 1)
    assert float(runner.train_step(tokens, targets, loss_fn)) == pytest.approx(math.log(2), abs=1e-6)
    assert all(p.grad is None for p in reference.parameters())
    assert all(p.grad is not None for p in policy.parameters())
