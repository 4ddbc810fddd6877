"""gateway.toml validation: each mistake is one paragraph naming the file, table and field, exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from auroragpt.errors import ConfigError
from auroragpt.gateway.config import load_gateway_config

GOOD_SITE = '[[sites]]\nname = "here"\nscheduler = "local"\n'


def _model(path) -> str:
    return f'[[models]]\nname = "tiny"\npath = "{path}"\nsite = "here"\n'


def test_a_valid_config_is_read(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('[gateway]\nport = 9000\nidle_timeout_s = 5\n' + GOOD_SITE + _model(tmp_path) + "max_replicas = 2\n")
    cfg = load_gateway_config(path)
    assert cfg.gateway.port == 9000 and cfg.gateway.idle_timeout_s == 5.0
    assert cfg.models["tiny"].sites == ["here"] and cfg.models["tiny"].max_replicas == 2
    assert cfg.state_dir == tmp_path / "gateway-state"


@pytest.mark.parametrize("text, words", [
    ('[gateway]\nprot = 1\n' + GOOD_SITE, ["[gateway]", "unknown key 'prot'"]),
    ('[gateway]\nport = "x"\n' + GOOD_SITE, ["port = 'x' must be an integer"]),
    ('[[sites]]\nname = "a"\nscheduler = "lsf"\n', ["[[sites]] #1", "scheduler = 'lsf'"]),
    (GOOD_SITE + '[[models]]\nname = "m"\npath = "."\nsite = "nowhere"\n', ["[[models]] #1", "site 'nowhere' is not defined"]),
    (GOOD_SITE + '[[models]]\nname = "m"\npath = "/does/not/exist"\n', ["path /does/not/exist does not exist"]),
    (GOOD_SITE + '[[models]]\nname = "m"\npath = "."\nmin_replicas = 3\nmax_replicas = 1\n', ["min_replicas <= max_replicas"]),
    (GOOD_SITE, ["no [[models]]"]),
    ('[gateway]\nport = [\n', ["not valid TOML"]),
])
def test_mistakes_are_named(tmp_path, text, words):
    path = tmp_path / "g.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    for word in words:
        assert word in str(caught.value)
    assert str(path) in str(caught.value)


def test_the_cli_exits_2_with_one_paragraph(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(GOOD_SITE + '[[models]]\nname = "m"\npath = "."\nengine = "tgi"\n')
    done = subprocess.run([sys.executable, "-m", "auroragpt.cli", "gateway", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "engine = 'tgi'" in done.stderr and "Traceback" not in done.stderr


def test_slurm_and_pbs_scripts_run_the_job_entry_point(tmp_path):
    from auroragpt.gateway.config import ModelSpec, Site
    from auroragpt.gateway.jobs import PBSScheduler, SlurmScheduler

    spec = ModelSpec(name="tiny", path=str(tmp_path), sites=["c"], serve_args=["--dtype", "float32"])
    for cls, directive in ((SlurmScheduler, "#SBATCH --output="), (PBSScheduler, "#PBS -o ")):
        sched = cls(Site(name="c", scheduler="slurm"), tmp_path)
        token, cmd = sched._prepare(spec)
        script = sched.script(token, cmd)
        assert directive in script and "-m auroragpt.gateway.jobmain" in script and "--dtype float32" in script
        key_file = sched.files(token)[0]
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        assert key_file.read_text() not in script  # the key never appears on a command line


def test_the_gateway_process_does_not_import_torch():
    """The gateway validates and routes requests; torch would cost every gateway start seconds
    and hundreds of MiB for nothing."""
    code = ("import sys\nimport auroragpt.commands.gateway, auroragpt.gateway.app, auroragpt.gateway.batches\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
