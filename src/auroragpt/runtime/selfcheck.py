"""`python -m auroragpt.runtime.selfcheck`: prove the distributed runtime works on this job.

Every rank calls setup() and reports what it found; rank 0 prints the topology table. Then an
all-reduce whose answer is known, and a few DDP steps of a small MLP after which every rank must
hold identical parameters. Any disagreement ends the job with a non-zero code and one clear line.
"""

from __future__ import annotations

import sys

DDP_STEPS = 3


def _topology_table(rows: list[tuple]) -> str:
    header = ("rank", "local", "host", "device", "backend", "launcher")
    table = [header] + [tuple(str(x) for x in row) for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    return "\n".join(lines)


def check_all_reduce(info) -> None:
    """Sum of (rank + 1) over all ranks must be world*(world+1)/2 on every rank."""
    import torch
    import torch.distributed as dist

    value = torch.tensor([float(info.rank + 1)], device=info.device)
    if info.world_size > 1:
        dist.all_reduce(value)
    expected = info.world_size * (info.world_size + 1) / 2
    if value.item() != expected:
        raise RuntimeError(f"all-reduce gave {value.item()} on rank {info.rank}, expected {expected}")


def check_ddp(info, steps: int = DDP_STEPS) -> float:
    """A few DDP steps on rank-specific data; parameters must stay identical across ranks."""
    import torch
    import torch.distributed as dist
    from torch import nn

    torch.manual_seed(1234)  # same initial weights everywhere (DDP also broadcasts them)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 1)).to(info.device)
    if info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type != "cpu" else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(info.rank)
    loss = torch.zeros(())
    for _ in range(steps):
        inputs = torch.randn(8, 16, generator=generator).to(info.device)
        targets = inputs.sum(dim=1, keepdim=True)
        loss = nn.functional.mse_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    if info.world_size > 1:
        low, high = flat.clone(), flat.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        spread = (high - low).abs().max().item()
        if spread != 0.0:
            raise RuntimeError(f"DDP parameters differ across ranks after {steps} steps (max spread {spread:g})")
    return float(loss.item())


def main() -> int:
    import torch.distributed as dist

    from auroragpt.runtime.setup import setup, teardown
    from auroragpt.errors import AuroraError

    try:
        info = setup(seed=0)
    except AuroraError as err:
        print(f"selfcheck: error: {err}", file=sys.stderr)
        return 2
    row = (info.rank, info.local_rank, info.hostname, str(info.device), info.backend, info.launcher)
    rows: list = [row]
    if info.world_size > 1:
        rows = [None] * info.world_size
        dist.all_gather_object(rows, row)
    if info.rank == 0:
        print(info.topology())
        print(_topology_table(rows), flush=True)
    try:
        check_all_reduce(info)
        if info.rank == 0:
            print(f"all-reduce: ok (sum over {info.world_size} ranks)", flush=True)
        loss = check_ddp(info)
        if info.rank == 0:
            print(f"ddp: ok ({DDP_STEPS} steps, parameters identical on every rank, last loss {loss:.4f})", flush=True)
    except RuntimeError as err:
        print(f"selfcheck: FAILED on rank {info.rank}: {err}", file=sys.stderr, flush=True)
        return 1
    teardown()
    if info.rank == 0:
        print("selfcheck: passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
