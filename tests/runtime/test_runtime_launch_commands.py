"""Whole launch command lines for realistic PBS (Aurora) and Slurm allocations and local runs,
and every bad-input case as a one-paragraph error without a traceback."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest
from runtime_cli_helpers import assert_one_paragraph_error, child_env, run_cli

from auroragpt.runtime.launch import LaunchRequest, build_launch_plan
from auroragpt.errors import LaunchError

PY = sys.executable
WRAP = f"{PY} -m auroragpt.runtime.rank_exec --"
AURORA_BIND = "list:1-8:9-16:17-24:25-32:33-40:41-48:53-60:61-68:69-76:77-84:85-92:93-100"
PBS_JOBID = "8219135.aurora-pbs-0001.hostmgmt.cm.aurora.alcf.anl.gov"


def aurora_hosts(count: int) -> list[str]:
    """Aurora-style node names: x<rack>c<chassis>s<slot>b0n0."""
    return [f"x{4100 + i // 64}c{(i // 8) % 8}s{i % 8}b0n0" for i in range(count)]


def pbs_env(tmp_path: Path, nodes: int) -> dict[str, str]:
    nodefile = tmp_path / PBS_JOBID
    nodefile.write_text("".join(f"{host}.hsn.cm.aurora.alcf.anl.gov\n" for host in aurora_hosts(nodes)))
    return {"PBS_JOBID": PBS_JOBID, "PBS_NODEFILE": str(nodefile), "PBS_O_WORKDIR": str(tmp_path),
            "PATH": "/opt/cray/pals/1.4/bin:/usr/bin"}


def slurm_env(nodelist: str, nodes: int) -> dict[str, str]:
    return {"SLURM_JOB_ID": "4815162", "SLURM_JOB_NODELIST": nodelist, "SLURM_JOB_NUM_NODES": str(nodes),
            "SLURM_NNODES": str(nodes), "PATH": "/usr/bin"}


AURORA_CPUS = 208  # 2 x 52 cores x 2 hardware threads


def line(request: LaunchRequest, env: dict[str, str], default_ppn: int = 1, host_cpus: int = AURORA_CPUS) -> str:
    return build_launch_plan(request, env=env, default_ppn=default_ppn, host_cpus=host_cpus).shell_line()


@pytest.mark.parametrize("nodes", [1, 2, 128])
def test_pbs_aurora_whole_allocation(tmp_path: Path, nodes: int) -> None:
    env = pbs_env(tmp_path, nodes)
    got = line(LaunchRequest(("python", "train.py", "--config", "a b.toml")), env, default_ppn=12)
    assert got == (f"mpiexec --envall --np {12 * nodes} --ppn 12 --hostfile {env['PBS_NODEFILE']} "
                   f"--cpu-bind {AURORA_BIND} {WRAP} python train.py --config 'a b.toml'")


def test_pbs_subset_of_hosts_and_fewer_tiles(tmp_path: Path) -> None:
    env = pbs_env(tmp_path, 128)
    hosts = ",".join(f"{h}.hsn.cm.aurora.alcf.anl.gov" for h in aurora_hosts(2))
    got = line(LaunchRequest(("python", "t.py"), nprocs=12, ppn=6, nhosts=2), env, default_ppn=12)
    assert got == (f"mpiexec --envall --np 12 --ppn 6 --hosts {hosts} "
                   f"--cpu-bind list:1-8:9-16:17-24:25-32:33-40:41-48 {WRAP} python t.py")
    got = line(LaunchRequest(("python", "t.py"), nprocs=24, bind="none"), env, default_ppn=12)
    assert got == f"mpiexec --envall --np 24 --ppn 12 --hosts {hosts} {WRAP} python t.py"


def test_pbs_on_a_node_without_auroras_cores_gets_no_binding(tmp_path: Path) -> None:
    """Polaris (PBS, 4 GPUs, 64 CPUs): Aurora's core list would name cores the node lacks."""
    env = pbs_env(tmp_path, 2)
    got = line(LaunchRequest(("python", "t.py")), env, default_ppn=4, host_cpus=64)
    assert got == f"mpiexec --envall --np 8 --ppn 4 --hostfile {env['PBS_NODEFILE']} {WRAP} python t.py"


def test_hostfile_with_comments_or_slots_is_passed_as_host_names(tmp_path: Path) -> None:
    """MPICH's hydra rejects `slots=` and comments: such a file becomes a host list."""
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# two nodes\nnodeA slots=4\nnodeB:4  # second\n")
    got = line(LaunchRequest(("python", "t.py"), ppn=2, hostfile=str(hostfile), launcher="mpiexec"), {"PATH": "/usr/bin"})
    assert got == f"mpiexec -n 4 -ppn 2 -hosts nodeA,nodeB {WRAP} python t.py"
    hostfile.write_text("nodeA\nbad host@x\n")
    with pytest.raises(LaunchError, match="line 2: 'bad host@x' is not a host name"):
        line(LaunchRequest(("python", "t.py"), hostfile=str(hostfile), launcher="mpiexec"), {"PATH": "/usr/bin"})


def test_pbs_with_user_hostfile(tmp_path: Path) -> None:
    env = pbs_env(tmp_path, 4)
    hostfile = tmp_path / "two"
    hostfile.write_text("x4100c0s0b0n0\nx4100c0s1b0n0\n")
    got = line(LaunchRequest(("python", "t.py"), ppn=12, hostfile=str(hostfile)), env)
    assert got == f"mpiexec --envall --np 24 --ppn 12 --hostfile {hostfile} --cpu-bind {AURORA_BIND} {WRAP} python t.py"


@pytest.mark.parametrize(("nodelist", "nodes"), [("nid001000", 1), ("nid[001000-001001]", 2),
                                                 ("nid[001000-001099,002000-002027]", 128)])
def test_slurm_whole_allocation(nodelist: str, nodes: int) -> None:
    got = line(LaunchRequest(("python", "train.py")), slurm_env(nodelist, nodes), default_ppn=4)
    assert got == (f"srun --nodes {nodes} --ntasks {4 * nodes} --ntasks-per-node 4 --kill-on-bad-exit=1 "
                   f"{WRAP} python train.py")


def test_slurm_subset_and_hostfile(tmp_path: Path) -> None:
    env = slurm_env("nid[001000-001127]", 128)
    got = line(LaunchRequest(("python", "t.py"), nprocs=8, ppn=4), env)
    assert got == f"srun --nodes 2 --ntasks 8 --ntasks-per-node 4 --kill-on-bad-exit=1 {WRAP} python t.py"
    hostfile = tmp_path / "hosts"
    hostfile.write_text("nid001003\nnid001004\n")
    got = line(LaunchRequest(("python", "t.py"), ppn=4, hostfile=str(hostfile)), env)
    assert got == (f"srun --nodes 2 --ntasks 8 --ntasks-per-node 4 --kill-on-bad-exit=1 "
                   f"--nodelist nid001003,nid001004 {WRAP} python t.py")


def test_local_mpiexec_and_torchrun_lines() -> None:
    env = {"PATH": str(Path(PY).parent)}  # the venv's mpiexec (mpich wheel)
    assert line(LaunchRequest(("python", "x.py"), nprocs=2), env) == f"mpiexec -n 2 {WRAP} python x.py"
    got = line(LaunchRequest(("python", "x.py"), nprocs=2), {"PATH": "/nonexistent"})
    assert got == (f"{PY} -m auroragpt.runtime.elastic --standalone --nnodes 1 --nproc-per-node 2 --no-python "
                   f"{WRAP} python x.py")
    got = line(LaunchRequest(("python", "x.py"), nprocs=3, launcher="torchrun"), env)
    assert "--nproc-per-node 3 --no-python" in got


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({"nprocs": 48, "ppn": 12}, "-n 48 asks for more ranks than the allocation has slots: 2 host(s) x 12"),
        ({"nhosts": 3}, "--nhosts 3 asks for more hosts than the 2"),
        ({"nprocs": 12, "ppn": 12, "nhosts": 2}, "fills only 1 host(s), but --nhosts is 2"),
        ({"ppn": 16, "bind": "aurora"}, "binds at most 12 ranks per host"),
        ({"ppn": 0}, "--ppn 0 must be a positive number"),
        ({"nprocs": 24, "launcher": "torchrun"}, "torchrun launcher starts ranks on this host only"),
    ],
)
def test_inconsistent_choices_rejected(tmp_path: Path, request_kwargs: dict, message: str) -> None:
    with pytest.raises(LaunchError) as err:
        build_launch_plan(LaunchRequest(("python", "t.py"), **request_kwargs), env=pbs_env(tmp_path, 2), default_ppn=12)
    assert message in err.value.message and err.value.hint


def test_cli_dry_run_prints_the_whole_pbs_command(tmp_path: Path) -> None:
    env = child_env(**{k: v for k, v in pbs_env(tmp_path, 2).items() if k != "PATH"})
    result = run_cli("launch", "--dry-run", "--ppn", "12", "--bind", "aurora", "--", "python", "-m",
                     "auroragpt.runtime.selfcheck", env=env)
    assert result.returncode == 0, result.stderr
    argv = shlex.split(result.stdout)
    assert os.path.samefile(argv[10], PY)  # the CLI's own interpreter (python or python3 of this venv)
    assert argv[:10] + argv[11:] == [
        "mpiexec", "--envall", "--np", "24", "--ppn", "12", "--hostfile", env["PBS_NODEFILE"],
        "--cpu-bind", AURORA_BIND, "-m", "auroragpt.runtime.rank_exec", "--",
        "python", "-m", "auroragpt.runtime.selfcheck"]


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("missing_hostfile", ("does not exist", "fix:")),
        ("empty_hostfile", ("is empty",)),
        ("missing_nodefile", ("PBS_NODEFILE", "does not exist")),
        ("too_many_ranks", ("more ranks than the allocation has slots", "2 host(s) x 12")),
        ("bad_nodelist", ("cannot read the Slurm node list 'nid[0010-'",)),
        ("unknown_backend", ("AURORAGPT_BACKEND='fastest' is not a collective backend",)),
        ("unknown_device", ("AURORAGPT_DEVICE='tpu'",)),
        ("nccl_without_cuda", ("AURORAGPT_BACKEND=nccl cannot drive a cpu device",)),
        ("no_command", ("no command to launch",)),
        ("negative_retries", ("--retries -1 must be 0 or more",)),
    ],
)
def test_cli_bad_input_is_one_paragraph(tmp_path: Path, case: str, needles: tuple[str, ...]) -> None:
    args = ["launch", "--dry-run", "--ppn", "12"]
    extra: dict[str, str] = {}
    if case == "missing_hostfile":
        args += ["--hostfile", str(tmp_path / "nope")]
    elif case == "empty_hostfile":
        (tmp_path / "empty").write_text("")
        args += ["--hostfile", str(tmp_path / "empty")]
    elif case == "missing_nodefile":
        extra = {"PBS_JOBID": PBS_JOBID, "PBS_NODEFILE": str(tmp_path / "gone")}
    elif case == "too_many_ranks":
        extra = {k: v for k, v in pbs_env(tmp_path, 2).items() if k != "PATH"}
        args += ["-n", "48"]
    elif case == "bad_nodelist":
        extra = {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "nid[0010-"}
    elif case == "unknown_backend":
        extra = {"AURORAGPT_BACKEND": "fastest"}
    elif case == "unknown_device":
        extra = {"AURORAGPT_DEVICE": "tpu"}
    elif case == "nccl_without_cuda":
        extra = {"AURORAGPT_BACKEND": "nccl", "AURORAGPT_DEVICE": "cpu"}
    elif case == "negative_retries":
        args += ["--retries", "-1"]
    if case != "no_command":
        args += ["--", "python", "t.py"]
    result = run_cli(*args, env=child_env(**extra), timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("auroragpt launch: error: ")
    assert_one_paragraph_error(result.stderr, *needles)


def fake_openmpi(tmp_path: Path) -> str:
    """A directory whose `mpiexec --version` answers like Open MPI 5."""
    bindir = tmp_path / "ompi-bin"
    bindir.mkdir()
    exe = bindir / "mpiexec"
    exe.write_text("#!/bin/sh\necho 'mpiexec (Open MPI) 5.0.3'\n")
    exe.chmod(0o755)
    return str(bindir)


def test_mpiexec_flavour_of_the_mpich_wheel_and_open_mpi(tmp_path: Path) -> None:
    from auroragpt.runtime.launch import mpiexec_flavour

    assert mpiexec_flavour(str(Path(PY).parent / "mpiexec")) == "MPICH hydra"
    assert mpiexec_flavour(str(Path(fake_openmpi(tmp_path)) / "mpiexec")) == "Open MPI"
    assert mpiexec_flavour(str(tmp_path / "missing")) == "unknown"


def test_open_mpi_gets_its_own_host_and_environment_flags(tmp_path: Path) -> None:
    """Hydra's -ppn/-hosts mean nothing to Open MPI, which also forwards variables only by name."""
    hostfile = tmp_path / "hosts"
    hostfile.write_text("nodeA slots=4\nnodeB\n")
    env = {"PATH": fake_openmpi(tmp_path), "AURORAGPT_DIST_TIMEOUT": "60", "HOME": "/root"}
    got = line(LaunchRequest(("python", "t.py"), ppn=2, hostfile=str(hostfile), launcher="mpiexec"), env)
    assert got == (f"mpiexec -n 4 --map-by ppr:2:node --host nodeA:2,nodeB:2 -x AURORAGPT_DIST_TIMEOUT -x PATH "
                   f"{WRAP} python t.py")
    # Under PBS too (Open MPI reads the allocation itself; Aurora's PALS binding does not apply).
    pbs = pbs_env(tmp_path, 2) | {"PATH": env["PATH"]}
    got = line(LaunchRequest(("python", "t.py")), pbs, default_ppn=4)
    hosts = ",".join(f"{h}.hsn.cm.aurora.alcf.anl.gov:4" for h in aurora_hosts(2))
    assert got == f"mpiexec -n 8 --map-by ppr:4:node --host {hosts} -x PATH {WRAP} python t.py"
    with pytest.raises(LaunchError, match="written for PALS mpiexec under PBS"):
        line(LaunchRequest(("python", "t.py"), bind="aurora"), pbs, default_ppn=4)
    # One host and no hostfile: the plain `mpiexec -n N` works for every MPI, nothing is asked.
    assert line(LaunchRequest(("python", "t.py"), nprocs=2), env) == f"mpiexec -n 2 {WRAP} python t.py"
