"""Tensor and sequence parallelism through DTensor's `parallelize_module`.

Megatron's split: wq/wk/wv and w1/w3 column-wise, wo and w2 row-wise, so each block needs one
all-reduce (or, with sequence parallelism, one all-gather + one reduce-scatter) per half.
With sequence parallelism the norms and residual stream are sharded along the sequence (dim 1).
"""

from __future__ import annotations

from torch import nn
from torch.distributed.device_mesh import DeviceMesh


def apply_tensor_parallel(
    model: nn.Module,
    tp_mesh: DeviceMesh,
    *,
    sequence_parallel: bool = True,
    loss_parallel: bool = False,
) -> nn.Module:
    """Shard a GPT (or a pipeline stage of one) over `tp_mesh`, in place.

    Parts a pipeline stage dropped (tok_embeddings, norm, output set to None) are skipped; a stage
    that does not start with the embedding receives the residual stream sharded along the sequence
    when sequence_parallel is on.
    """
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    residual = Shard(1) if sequence_parallel else Replicate()
    tied = (
        getattr(model, "tok_embeddings", None) is not None
        and getattr(model, "output", None) is not None
        and model.output.weight is model.tok_embeddings.weight
    )

    top: dict[str, object] = {}
    if getattr(model, "tok_embeddings", None) is not None:
        top["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=residual)
    if getattr(model, "norm", None) is not None and sequence_parallel:
        top["norm"] = SequenceParallel()
    if getattr(model, "output", None) is not None:
        top["output"] = ColwiseParallel(
            input_layouts=residual,
            output_layouts=Shard(-1) if loss_parallel else Replicate(),
            use_local_output=not loss_parallel,
        )
    if top:
        parallelize_module(model, tp_mesh, top)
    if tied:
        # Both sides are sharded over the vocabulary (dim 0), so one DTensor can serve both again.
        model.output.weight = model.tok_embeddings.weight

    for block in model.layers.values():
        plan: dict[str, object] = {
            "attention.wq": ColwiseParallel(),
            "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=residual),
            "feed_forward.w1": ColwiseParallel(),
            "feed_forward.w3": ColwiseParallel(),
            "feed_forward.w2": RowwiseParallel(output_layouts=residual),
        }
        if sequence_parallel:
            plan.update(
                {
                    "attention_norm": SequenceParallel(),
                    "ffn_norm": SequenceParallel(),
                    # Block.attention(x, cos, sin, cache): gather the sequence of x only.
                    "attention": PrepareModuleInput(
                        input_layouts=(Shard(1), None, None, None),
                        desired_input_layouts=(Replicate(), None, None, None),
                        use_local_output=True,
                    ),
                    "feed_forward": PrepareModuleInput(
                        input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),), use_local_output=True
                    ),
                }
            )
        parallelize_module(block, tp_mesh, plan)
    return model

