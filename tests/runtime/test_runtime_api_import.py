"""`import auroragpt` does no work: no environment read, no torch.distributed / MPI import; the
public names load on first use. And no path, import or document names the old package."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from runtime_cli_helpers import child_env

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: os.environ is replaced by a recording copy and every import is
# seen by a finder at the head of sys.meta_path, before the module under test is imported.
AUDIT = r"""
import json, os, sys

reads = []

class RecordingEnviron(type(os.environ)):
    def __getitem__(self, key):
        reads.append(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        reads.append(key)
        return super().__contains__(key)

    def __iter__(self):
        reads.append("<all>")
        return super().__iter__()

exec(sys.argv[2])  # what may run before recording starts
env = os.environ
os.environ = RecordingEnviron(env._data, env.encodekey, env.decodekey, env.encodevalue, env.decodevalue)
imported = []

class Finder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        imported.append(name)
        return None

sys.meta_path.insert(0, Finder)
exec(sys.argv[1])
print(json.dumps({"reads": reads, "imported": imported}))
"""

FORBIDDEN = re.compile(r"^(torch|mpi4py|matplotlib)(\.|$)")


def audit(code: str, before: str = "") -> dict:
    result = subprocess.run([sys.executable, "-c", AUDIT, code, before], env=child_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_auroragpt_reads_no_env_and_imports_no_torch() -> None:
    seen = audit("import auroragpt as ag\nassert ag.__version__\nassert 'History' in dir(ag)")
    assert seen["reads"] == [], seen["reads"]
    heavy = [name for name in seen["imported"] if FORBIDDEN.match(name)]
    assert heavy == [], heavy
    assert "auroragpt" in seen["imported"]  # the finder did see imports


def test_api_modules_read_no_env_and_start_no_distributed_or_mpi() -> None:
    """The modules behind the lazy names may need torch itself (imported before recording starts:
    torch reads its own variables), but read nothing more, start no group and load no MPI/matplotlib."""
    code = ("import auroragpt.runtime.api, auroragpt.runtime.history, auroragpt.runtime.timers, "
            "auroragpt.parallel.blocks, auroragpt.train.plots\n"
            "import torch.distributed as dist\nassert not dist.is_initialized()")
    seen = audit(code, before="import torch")
    assert seen["reads"] == [], seen["reads"]
    heavy = [n for n in seen["imported"] if re.match(r"^(mpi4py|matplotlib|torch\.distributed\.(fsdp|device_mesh))(\.|$)", n)]
    assert heavy == [], heavy


def test_lazy_attributes_resolve_and_unknown_names_fail() -> None:
    code = ("import auroragpt as ag, sys\n"
            "names = ['setup', 'teardown', 'wrap', 'device', 'barrier', 'all_reduce_mean', 'print0', 'History', 'timers']\n"
            "assert all(callable(getattr(ag, n)) for n in names)\n"
            "assert 'mpi4py' not in sys.modules and not any(m.startswith('matplotlib') for m in sys.modules)\n"
            "try:\n    ag.no_such_name\nexcept AttributeError as err:\n    assert 'no_such_name' in str(err)\n"
            "else:\n    raise SystemExit('no AttributeError')\n"
            "from auroragpt import errors  # submodules still import through the package\n")
    seen = audit(code)
    assert seen["reads"] == []  # resolving the names reads nothing either


def test_no_path_import_or_document_names_the_old_package() -> None:
    old = "auroragpt" + r"[./\\]dist(?![A-Za-z0-9_])"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    assert listed, "git ls-files found nothing"
    offenders = []
    for rel in listed:
        path = ROOT / rel
        if re.search(old, rel) or (path.is_file() and re.search(old, path.read_text(errors="ignore"))):
            offenders.append(rel)
    assert offenders == []
