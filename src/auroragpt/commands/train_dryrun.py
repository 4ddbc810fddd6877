"""`auroragpt train --dry-run --world-size N`: argument checks and the printed report."""

from __future__ import annotations

from auroragpt.errors import ConfigError


def run_dry_run(cfg, world_size: int | None, ranks_per_node: int | None, device: str) -> int:
    from auroragpt.train.dryrun import dry_run
    from auroragpt.train.dryrun_estimate import device_names
    from auroragpt.train.dryrun_report import format_report
    from auroragpt.train.metrics import device_spec

    if world_size is None or world_size < 1:
        raise ConfigError("--dry-run needs --world-size N (the number of ranks of the job to check), N >= 1",
                          hint="e.g. auroragpt train --config configs/auroragpt-7b.toml --dry-run --world-size 768")
    spec = device_spec(device)
    if spec is None:
        raise ConfigError(f"--device {device!r} is not in the device table", hint=f"choose one of {', '.join(device_names())}")
    name = next(n for n in device_names() if n.lower() in device.lower())
    ranks_per_node = ranks_per_node or spec.per_node
    if ranks_per_node < 1 or world_size % ranks_per_node:
        raise ConfigError(f"--ranks-per-node {ranks_per_node} does not divide --world-size {world_size}",
                          hint="give the ranks per node of the machine (Aurora: 12, Polaris: 4)")
    print(format_report(dry_run(cfg, world_size), cfg, name, ranks_per_node), flush=True)
    return 0
