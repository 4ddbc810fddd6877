"""What `auroragpt doctor` checks: each fact this machine offers a run, and each problem with its fix."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import platform
import shutil
import sys

from auroragpt.errors import AuroraError


@dataclasses.dataclass(frozen=True)
class Problem:
    what: str
    fix: str
    blocking: bool = False  # True when a run started here would fail


@dataclasses.dataclass
class Report:
    facts: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    problems: list[Problem] = dataclasses.field(default_factory=list)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def diagnose() -> Report:
    """Gather the facts and problems (imports torch; safe to call anywhere)."""
    from auroragpt import __version__
    from auroragpt.runtime import device as device_mod
    from auroragpt.runtime.env import read_rank_info
    from auroragpt.runtime.launch import mpiexec_flavour
    from auroragpt.runtime.scheduler import detect_allocation, detect_scheduler

    report = Report()
    facts, problems = report.facts, report.problems
    facts.append(("auroragpt", __version__))
    facts.append(("python", f"{platform.python_version()} ({sys.executable})"))
    torch_version = _version("torch")
    facts.append(("torch", torch_version or "not installed"))
    if torch_version is None:
        problems.append(Problem("torch is not installed", "`pip install torch` (any build >= 2.5)", True))
        return report
    try:
        device_type = device_mod.detect_device()
        count = device_mod.device_count(device_type)
        name = device_mod.device_name(device_mod.local_device(device_type, 0))
        facts.append(("device", f"{device_type} x{count} ({name})"))
    except AuroraError as err:
        device_type = None
        facts.append(("device", "invalid override"))
        problems.append(Problem(err.message, err.hint or "unset AURORAGPT_DEVICE", True))
    if device_type is not None:
        try:
            facts.append(("backend", device_mod.detect_backend(device_type)))
        except AuroraError as err:
            facts.append(("backend", "none usable"))
            problems.append(Problem(err.message, err.hint or "unset AURORAGPT_BACKEND", True))
        if device_type == "cpu":
            problems.append(Problem("no accelerator found: runs will use the CPU (fine for the demo, slow for training)",
                                    "on a GPU node, install the torch build for it (CUDA or XPU) and check drivers"))
        if device_type == "xpu" and importlib.util.find_spec("oneccl_bindings_for_pytorch") is None:
            facts.append(("oneCCL bindings", "not installed (xccl from torch is used)"))
    scheduler = detect_scheduler()
    try:
        allocation = detect_allocation()
        facts.append(("scheduler", f"{scheduler}: {len(allocation.hosts)} host(s) from {allocation.source}"))
    except AuroraError as err:
        facts.append(("scheduler", f"{scheduler} (allocation unreadable)"))
        problems.append(Problem(err.message, err.hint or "check the scheduler variables", True))
    mpiexec = shutil.which("mpiexec")
    facts.append(("mpiexec", f"{mpiexec} ({mpiexec_flavour(mpiexec)})" if mpiexec else "not found"))
    srun = shutil.which("srun")
    if scheduler == "slurm" or srun:
        facts.append(("srun", srun or "not found"))
    mpi4py = _version("mpi4py")
    facts.append(("mpi4py", mpi4py or "not installed"))
    if scheduler == "pbs" and not mpiexec:
        problems.append(Problem("PBS job but no mpiexec on PATH", "`module load` the MPI (on Aurora: it is loaded by "
                                "default; check `module list`)", True))
    if scheduler == "slurm" and not srun:
        problems.append(Problem("Slurm job but no srun on PATH", "run inside the Slurm allocation's shell", True))
    if mpiexec and not mpi4py:
        problems.append(Problem("mpiexec is available but mpi4py is not, so ranks started by mpiexec cannot agree "
                                "on MASTER_ADDR/MASTER_PORT by themselves",
                                "`pip install mpi4py`, or export MASTER_ADDR and MASTER_PORT before launching"))
    if not mpiexec and scheduler == "none":
        facts.append(("local launcher", "torch elastic (python -m auroragpt.runtime.elastic, i.e. torch.distributed.run)"))
    try:
        ranks = read_rank_info(use_mpi4py=False)
        if ranks.launcher != "none":
            facts.append(("this process", f"rank {ranks.rank} of {ranks.world_size} (from {ranks.launcher})"))
    except AuroraError as err:
        problems.append(Problem(err.message, err.hint or "unset stale launcher variables", True))
    for package in ("numpy", "megatron-core", "transformers", "safetensors", "lm-eval"):
        facts.append((package, _version(package) or "not installed"))
    return report


def render(report: Report) -> str:
    """One screen: the facts as aligned lines, then each problem with its fix."""
    width = max(len(key) for key, _ in report.facts)
    lines = ["auroragpt doctor"] + [f"  {key.ljust(width)}  {value}" for key, value in report.facts]
    if report.problems:
        lines.append("problems:")
        for problem in report.problems:
            lines.append(f"  - {problem.what}" + (" [blocks runs]" if problem.blocking else ""))
            lines.append(f"    fix: {problem.fix}")
    else:
        lines.append("no problems found")
    return "\n".join(lines)
