"""Worker for the `ag.wrap` equivalence test: 5 steps of a small residual MLP per wrap mode.

`python api_wrap_worker.py plain` trains the unwrapped model on the whole batch in one process;
under `auroragpt launch -n 2 ... HISTORY_DIR`, each mode wraps a fresh copy and every rank trains
on its half; then the collectives, timers and a reduced History are fed values known per rank.
Prints one JSON line (rank 0), the loss being the global-batch mean.
"""

import json
import sys

import torch
from torch import nn

import auroragpt as ag

MODES = {  # name -> ag.wrap arguments
    "fsdp": {"mode": "fsdp"},
    "fsdp_ac": {"mode": "fsdp", "activation_checkpointing": "full"},
    "fsdp_blocks_by_class": {"mode": "fsdp", "blocks": "Block"},
    "ddp": {"mode": "ddp"},
    "hsdp": {"mode": "hsdp"},  # one replica group per node: here, shards over both ranks
    "hsdp_two_replicas": {"mode": "hsdp", "replicate": 2},
    "hsdp_two_replicas_seeded_per_rank": {"mode": "hsdp", "replicate": 2, "seed_per_rank": True},
}
SHARE: dict[str, float] = {}  # mode -> this rank's share of the parameters' elements


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class Net(nn.Module):
    def __init__(self, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.inp = nn.Linear(4, width)
        self.layers = nn.ModuleList(Block(width) for _ in range(depth))
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.layers:
            h = block(h)
        return self.out(h)


def losses(wrap_args: dict | None, rank: int, world: int) -> list[float]:
    args = dict(wrap_args or {})
    torch.manual_seed(rank if args.pop("seed_per_rank", False) else 0)  # rank 0's weights must win
    model = Net()
    if wrap_args is not None:
        if args.get("blocks") == "Block":
            args["blocks"] = Block
        total = sum(p.numel() for p in model.parameters())
        model = ag.wrap(model, args.pop("mode"), **args)
        local = sum(getattr(p, "_local_tensor", p).numel() for p in model.parameters())
        SHARE[json.dumps(wrap_args, sort_keys=True)] = local / total
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(1)
    out = []
    for _ in range(5):
        x = torch.randn(8, 4, generator=data)
        y = x.sum(dim=1, keepdim=True).sin()
        mine = slice(rank * 8 // world, (rank + 1) * 8 // world)
        loss = nn.functional.mse_loss(model(x[mine]), y[mine])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        out.append(ag.all_reduce_mean(loss.item()) if wrap_args is not None else loss.item())
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["plain"]:
        print(json.dumps({"plain": losses(None, 0, 1)}), flush=True)
    else:
        info = ag.setup()
        result = {name: losses(args, info.rank, info.world_size) for name, args in MODES.items()}
        share = {name: SHARE[json.dumps(args, sort_keys=True)] for name, args in MODES.items()}
        timers = type(ag.timers)()
        timers.add("known", info.rank + 1.0)
        history = ag.History(sys.argv[1], reduce=True)
        for step in (1, 2, 3):
            history.update(step=step, value=torch.tensor(10.0 * step + info.rank))
        known = {"float": ag.all_reduce_mean(info.rank + 1), "tensor": ag.all_reduce_mean(torch.tensor([info.rank, 4])).tolist(),
                 "timers": timers.stats()["known"], "summary": history.finalize()}
        ag.print0(json.dumps({"losses": result, "share": share, "known": known}))
        ag.teardown()
