"""Worker for the real multi-process tests: setup(), a checked all-reduce, teardown()."""

import os
import sys

import torch
import torch.distributed as dist

from auroragpt.runtime.setup import setup, teardown

info = setup(seed=1)
assert setup() is info, "a second setup() must return the same DistInfo"
value = torch.tensor([float(info.rank + 1)])
dist.all_reduce(value)
expected = info.world_size * (info.world_size + 1) / 2
ok = value.item() == expected
print(f"allreduce rank={info.rank} world={info.world_size} local={info.local_rank}/{info.local_world_size} "
      f"nodes={info.num_nodes} launcher={info.launcher} backend={info.backend} "
      f"master={os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} sum={value.item()} "
      f"{'ok' if ok else 'WRONG'}", flush=True)
teardown()
sys.exit(0 if ok else 1)
