"""Every impossible layout is refused before any process group exists, with its numbers."""

from __future__ import annotations

import dataclasses

import pytest

from auroragpt.errors import ConfigError
from auroragpt.model.presets import ModelConfig, get_preset
from auroragpt.parallel.activation_checkpoint import parse_mode
from auroragpt.parallel.layout import ParallelLayout, build_mesh, grad_accum_steps, validate
from auroragpt.parallel.pipeline import stage_ids, stage_layers

CFG = ModelConfig(dim=64, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=128, vocab_size=256, max_seq_len=64)


def refused(layout: ParallelLayout, world: int, *needles: str, cfg: ModelConfig = CFG, gb: int = 8, mb: int = 2) -> str:
    with pytest.raises(ConfigError) as info:
        validate(layout, world, cfg, gb, mb)
    text = str(info.value)
    for needle in needles:
        assert needle in text, f"{needle!r} missing from: {text}"
    return text


def test_dp_shard_fills_the_rest_of_the_world() -> None:
    layout = validate(ParallelLayout(tp=2, pp=2), 16, dataclasses.replace(CFG, n_layers=4), 64, 4)
    assert (layout.dp_shard, layout.dp, layout.world_size, layout.data_parallel_mode) == (4, 4, 16, "fsdp")
    assert grad_accum_steps(layout, 64, 4) == 4


def test_7b_on_768_ranks_is_accepted() -> None:
    cfg = get_preset("7b")
    layout = validate(ParallelLayout(dp_replicate=64, tp=4, pp=1), 768, cfg, 3072, 1)
    assert (layout.dp_shard, layout.data_parallel_mode, grad_accum_steps(layout, 3072, 1)) == (3, "hsdp", 16)


def test_rest_of_world_not_divisible() -> None:
    refused(ParallelLayout(tp=4), 6, "world size 6", "tp (4)", "= 4")


def test_product_differs_from_world() -> None:
    refused(ParallelLayout(dp_shard=2, tp=2), 8, "= 4 ranks", "has 8")


@pytest.mark.parametrize("field,value", [("tp", 0), ("pp", -1), ("dp_replicate", 1.5), ("dp_shard", 0), ("pp_virtual_stages", 0)])
def test_sizes_must_be_positive_integers(field: str, value: object) -> None:
    refused(ParallelLayout(**{field: value}), 2, f"parallel.{field}")


def test_negative_microbatches() -> None:
    refused(ParallelLayout(pp_microbatches=-1), 1, "pp_microbatches")


def test_heads_not_divisible_by_tp() -> None:
    cfg = dataclasses.replace(CFG, n_heads=6, n_kv_heads=6, dim=96)
    refused(ParallelLayout(tp=4, dp_shard=1), 4, "model.n_heads (6)", "tp (4)", cfg=cfg)


def test_kv_heads_not_divisible_by_tp() -> None:
    refused(ParallelLayout(tp=4, dp_shard=1), 4, "model.n_kv_heads (2)", "tp (4)")


def test_ffn_not_divisible_by_tp() -> None:
    cfg = dataclasses.replace(CFG, ffn_dim=129)
    refused(ParallelLayout(tp=2, dp_shard=1), 2, "model.ffn_dim (129)", "tp (2)", cfg=cfg)


def test_vocab_not_divisible_for_loss_parallel() -> None:
    cfg = dataclasses.replace(CFG, vocab_size=255)
    refused(ParallelLayout(tp=2, dp_shard=1, loss_parallel=True), 2, "vocab_size (255)", "tp (2)", cfg=cfg)


def test_layers_not_divisible_by_stages() -> None:
    cfg = dataclasses.replace(CFG, n_layers=6)
    refused(ParallelLayout(pp=2, dp_shard=1, pp_schedule="Interleaved1F1B", pp_virtual_stages=2), 2,
            "model.n_layers (6)", "pp (2) x pp_virtual_stages (2) = 4", cfg=cfg, mb=2)


def test_unknown_schedule() -> None:
    refused(ParallelLayout(pp=2, dp_shard=1, pp_schedule="ZeroBubble"), 2, "'ZeroBubble'", "1F1B")


def test_interleaved_needs_virtual_stages() -> None:
    refused(ParallelLayout(pp=2, dp_shard=1, pp_schedule="Interleaved1F1B"), 2, "pp_virtual_stages >= 2")


def test_virtual_stages_need_interleaved_schedule() -> None:
    refused(ParallelLayout(pp=2, dp_shard=1, pp_virtual_stages=2), 2, "pp_virtual_stages = 2", "1F1B")


def test_tied_embeddings_refused_with_pipeline() -> None:
    cfg = dataclasses.replace(CFG, tie_embeddings=True)
    refused(ParallelLayout(pp=2, dp_shard=1), 2, "tie_embeddings", "pp = 2", cfg=cfg)


def test_too_few_microbatches() -> None:
    refused(ParallelLayout(pp=4, dp_shard=1, pp_microbatches=2), 4, "pp_microbatches (2)", "pp (4)", mb=4)


def test_interleaved_microbatches_multiple_of_pp() -> None:
    cfg = dataclasses.replace(CFG, n_layers=8)
    refused(ParallelLayout(pp=2, dp_shard=1, pp_schedule="Interleaved1F1B", pp_virtual_stages=2, pp_microbatches=3), 2,
            "pp_microbatches (3)", "multiple of pp (2)", cfg=cfg, mb=3, gb=9)


def test_global_batch_not_divisible() -> None:
    refused(ParallelLayout(dp_shard=4), 4, "global_batch (12)", "micro_batch (2)", "= 8", gb=12, mb=2)


def test_micro_batch_not_divisible_by_pipeline_microbatches() -> None:
    refused(ParallelLayout(pp=2, dp_shard=1, pp_microbatches=4), 2, "micro_batch (2)", "pp_microbatches (4)", mb=2)


@pytest.mark.parametrize("gb,mb", [(0, 1), (8, 0), (8, True)])
def test_batch_sizes_must_be_positive(gb: int, mb: int) -> None:
    refused(ParallelLayout(), 1, "must be an integer >= 1", gb=gb, mb=mb)


@pytest.mark.parametrize("fields,mode", [
    ({"dp_replicate": 2, "dp_shard": 1}, "ddp"),
    ({"dp_replicate": 2, "dp_shard": 1, "tp": 2}, "hsdp"),  # DDP cannot hold DTensor parameters
    ({"dp_replicate": 2, "dp_shard": 1, "pp": 2}, "hsdp"),  # nor run several forwards per backward
    ({"dp_shard": 4}, "fsdp"),
    ({"dp_shard": 1}, "none"),
])
def test_data_parallel_mode(fields: dict, mode: str) -> None:
    layout = ParallelLayout(**fields, pp_microbatches=2)
    assert validate(layout, layout.world_size, CFG, 8, 2).data_parallel_mode == mode


def test_unknown_field_from_config() -> None:
    with pytest.raises(ConfigError, match="unknown field"):
        ParallelLayout.from_dict({"dp": 2})


def test_mesh_without_process_group_refused() -> None:
    layout = validate(ParallelLayout(dp_shard=2), 2, CFG, 8, 2)
    with pytest.raises(ConfigError, match="not initialised"):
        build_mesh(layout, "cpu")


def test_stage_assignment_is_interleaved() -> None:
    assert stage_ids(1, 4, 2) == [1, 5]
    assert list(stage_layers(5, 8, 16)) == [10, 11]


@pytest.mark.parametrize("mode,every", [("none", 0), (False, 0), ("full", 1), (True, 1), ("every:2", 2), (3, 3), ("selective", "selective")])
def test_activation_checkpoint_modes(mode: object, every: int) -> None:
    assert parse_mode(mode) == every


@pytest.mark.parametrize("mode", ["sometimes", "every:x", -1])
def test_activation_checkpoint_bad_mode(mode: object) -> None:
    with pytest.raises(ConfigError, match="activation_checkpoint"):
        parse_mode(mode)
