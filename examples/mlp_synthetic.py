"""A small MLP learning y = sin(x1) + x2^2 on synthetic data, with the auroragpt runtime API.

    auroragpt launch -n 2 -- python examples/mlp_synthetic.py --out out/mlp
"""
import argparse

import torch
from torch import nn

import auroragpt as ag

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="out/mlp")
parser.add_argument("--steps", type=int, default=50)
args = parser.parse_args()

info = ag.setup(seed=0)
torch.manual_seed(0)  # the same initial weights on every rank
model = ag.wrap(nn.Sequential(nn.Linear(2, 64), nn.GELU(), nn.Linear(64, 1)), "fsdp")
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
history = ag.History(args.out, reduce=True)
generator = torch.Generator().manual_seed(1 + info.rank)  # each rank draws its own batches
for step in range(1, args.steps + 1):
    with ag.timers("batch"):
        x = torch.randn(64, 2, generator=generator)
        y = torch.sin(x[:, :1]) + x[:, 1:] ** 2
    with ag.timers("step"):
        loss = nn.functional.mse_loss(model(x.to(info.device)), y.to(info.device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    history.update(step=step, loss=loss)
    if step % 10 == 0:
        ag.print0(history.line())
ag.print0(history.finalize())
ag.print0(ag.timers.report())
ag.teardown()
