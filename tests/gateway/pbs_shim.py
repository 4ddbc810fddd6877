"""A process-running stand-in for PBS Pro's qsub/qstat/qdel/qrls, for tests where no PBS server exists.

It is NOT PBS: no server, no nodes, no resources. It reproduces only the behaviour the gateway's
PBS path depends on, as PBS Pro documents it: `qsub [-h] SCRIPT` prints the job id
(`SEQ.SERVER`) and runs the script on this host with PBS_JOBID, PBS_NODEFILE and PBS_O_WORKDIR set,
its output to the `#PBS -o` file (`-j oe`); `qstat -x -f ID` prints `job_state = Q|H|R|F` in the
full-display format, or "qstat: Unknown Job Id ID" and exit 153; `qdel ID` ends the job's process
group; `qrls ID` releases a held job. State lives in $PBS_SHIM_DIR.

    python pbs_shim.py qsub|qstat|qdel|qrls ARGS...
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

SERVER = "shimserver"


def _dir() -> Path:
    folder = Path(os.environ["PBS_SHIM_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _record(job_id: str) -> Path:
    return _dir() / f"{job_id}.json"


def _directive(script: str, flag: str) -> str | None:
    for line in script.splitlines():
        words = line.split()
        if words[:2] == ["#PBS", flag] and len(words) > 2:
            return words[2]
    return None


def _start(job: dict) -> None:
    nodefile = _dir() / f"{job['id']}.nodes"
    nodefile.write_text(socket.gethostname() + "\n")
    env = {**os.environ, "PBS_JOBID": job["id"], "PBS_NODEFILE": str(nodefile), "PBS_O_WORKDIR": job["workdir"],
           "PBS_JOBNAME": job["name"]}
    with open(job["output"], "ab") as out:
        proc = subprocess.Popen(["bash", job["script"]], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=job["workdir"], env=env, start_new_session=True)
    job.update(state="R", pid=proc.pid)


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie whose parent (an earlier qsub) is gone is not running
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def qsub(args: list[str]) -> int:
    hold = "-h" in args
    script_path = Path(args[-1]).resolve()
    script = script_path.read_text()
    counter = _dir() / "seq"
    seq = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(seq))
    job = {"id": f"{seq}.{SERVER}", "script": str(script_path), "workdir": os.getcwd(),
           "name": _directive(script, "-N") or script_path.name,
           "output": _directive(script, "-o") or f"{script_path.name}.o{seq}", "state": "H" if hold else "Q"}
    if not hold:
        _start(job)
    _record(job["id"]).write_text(json.dumps(job))
    print(job["id"])
    return 0


def _load(job_id: str, command: str) -> dict | None:
    path = _record(job_id)
    if not path.exists():
        print(f"{command}: Unknown Job Id {job_id}", file=sys.stderr)
        return None
    job = json.loads(path.read_text())
    if job["state"] == "R" and not _alive(job["pid"]):
        job["state"] = "F"
        path.write_text(json.dumps(job))
    return job


def qstat(args: list[str]) -> int:
    job = _load(args[-1], "qstat")
    if job is None:
        return 153
    print(f"Job Id: {job['id']}\n    Job_Name = {job['name']}\n    job_state = {job['state']}\n"
          f"    queue = workq\n    server = {SERVER}\n")
    return 0


def qdel(args: list[str]) -> int:
    job = _load(args[-1], "qdel")
    if job is None:
        return 153
    if job["state"] == "R":
        try:
            os.killpg(job["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    job["state"] = "F"
    _record(job["id"]).write_text(json.dumps(job))
    return 0


def qrls(args: list[str]) -> int:
    job = _load(args[-1], "qrls")
    if job is None:
        return 153
    if job["state"] == "H":
        _start(job)
        _record(job["id"]).write_text(json.dumps(job))
    return 0


if __name__ == "__main__":
    sys.exit({"qsub": qsub, "qstat": qstat, "qdel": qdel, "qrls": qrls}[sys.argv[1]](sys.argv[2:]))
