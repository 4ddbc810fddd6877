"""Every config key refuses out-of-range, wrong-type and non-finite values: exit code 2 and one
paragraph from `auroragpt train`, before any process group, model or training step exists."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auroragpt.config import CHOICES, _toml_value, load_config, override_keys
from auroragpt.config_rules import RANGES
from auroragpt.errors import ConfigError

BASE = """
[model]
preset = "tiny"
n_layers = 2

[data]
synthetic = true
seq_len = 64
micro_batch = 2
global_batch = 8

[train]
steps = 3

[optim]
lr = 1e-3
warmup_steps = 1

[metrics]
plots = false
"""

KEYS = dict(override_keys())  # "section.key" -> type name
FREE_TEXT = {k for k, t in KEYS.items() if t == "str" and tuple(k.split(".")) not in CHOICES}


def _outside(key: str) -> list[str]:
    """Values just outside the field's range, on each bounded side, and far outside."""
    low, low_incl, high, high_incl, _ = RANGES[tuple(key.split("."))]
    step = 1 if KEYS[key] == "int" else 1e-9
    values = []
    if low is not None:
        values += [repr(low - step if low_incl else low), repr(low - 10**6)]
    if high is not None:
        values += [repr(high + step if high_incl else high), "1e300"]
    if key == "parallel.dp_shard":
        values = ["0", "-2"]
    return [v.replace("e-09", "e-9") for v in values]


def _bad_values() -> list[tuple[str, str, str]]:
    """(key, value, kind) for every key: wrong type, non-finite, out of range, too large."""
    cases = []
    for key, kind in KEYS.items():
        section_key = tuple(key.split("."))
        if kind in ("int", "float"):
            cases += [(key, "abc", "type"), (key, "nan", "non-finite"), (key, "inf", "non-finite"),
                      (key, "-inf", "non-finite")]
            if kind == "int":
                cases += [(key, "1.5", "type"), (key, str(2**70), "range"), (key, "true", "type")]
        elif kind == "bool":
            cases += [(key, "maybe", "type"), (key, "2", "type")]
        elif section_key in CHOICES:
            cases += [(key, "nonsense", "choice")]
        if section_key in RANGES:
            cases += [(key, value, "range") for value in _outside(key)]
    return cases


CASES = _bad_values()


def test_every_key_has_a_rule():
    """A new numeric field cannot slip in without a range (or an explicit decision)."""
    numeric = {tuple(k.split(".")) for k, t in KEYS.items() if t in ("int", "float")}
    assert numeric - set(RANGES) == set(), "numeric config fields without a range in config_rules.RANGES"
    assert {k for k, _, _ in CASES} >= set(KEYS) - FREE_TEXT


@pytest.fixture
def no_training(monkeypatch):
    """Reaching the job itself (process group, model, steps) fails the test."""
    import auroragpt.train.trainer as trainer

    def reached(*_args, **_kwargs):
        raise AssertionError("an invalid config reached training")

    monkeypatch.setattr(trainer, "_train", reached)


@pytest.mark.parametrize("key,value,kind", CASES, ids=[f"{k}={v}" for k, v, _ in CASES])
def test_bad_value_exits_2_with_one_paragraph(tmp_path, capsys, no_training, key, value, kind):
    from auroragpt.cli import main

    config = tmp_path / "run.toml"
    config.write_text(BASE)
    rc = main(["train", "--config", str(config), f"--run.dir={tmp_path / 'run'}", f"--{key}={value}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and "\n\n" not in err and err.count("\n") <= 1, err
    assert err.startswith("auroragpt train: error:"), err
    assert key.split(".")[1] in err or kind == "type" and key in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("key", sorted(KEYS))
def test_wrong_toml_type_names_file_and_key(tmp_path, key):
    """In a TOML file, a value of the wrong type (a string for a number, a number for text or a flag)."""
    import tomllib

    section, name = key.split(".")
    tables = tomllib.loads(BASE)
    tables.setdefault(section, {})[name] = "text" if KEYS[key] in ("int", "float", "bool") else 3
    config = tmp_path / "run.toml"
    config.write_text("".join(f"[{t}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items())
                              for t, table in tables.items()))
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert str(config) in str(err.value) and key in str(err.value)


NUMERIC = sorted(k for k, t in KEYS.items() if t in ("int", "float"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(NUMERIC),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**80), 2**80)))
def test_any_number_is_accepted_in_range_or_refused_cleanly(tmp_path, key, value):
    """Whatever number arrives, load_config either refuses it with a ConfigError or keeps a finite
    value inside the field's range; nothing else escapes."""
    config = tmp_path / "run.toml"
    config.write_text(BASE)
    try:
        cfg = load_config(config, [f"--{key}={value!r}"])
    except ConfigError:
        return
    section, name = key.split(".")
    got = getattr(getattr(cfg, section), name)
    assert isinstance(got, (int, float)) and math.isfinite(got)
    assert not isinstance(got, int) or abs(got) < 2**63
    low, low_incl, high, high_incl, _ = RANGES[(section, name)]
    assert low is None or got > low or (low_incl and got == low)
    assert high is None or got < high or (high_incl and got == high)


@pytest.mark.parametrize("override", ["--model.rope_theta=0", "--model.norm_eps=-1", "--optim.beta1=1.5",
                                      "--optim.eps=-1", "--model.init_std=-1", "--checkpoint.every=-5"])
def test_values_that_used_to_train_nan_or_trace_back_are_refused(tmp_path, override):
    config = tmp_path / "run.toml"
    config.write_text(BASE)
    with pytest.raises(ConfigError, match=override[2:].split("=")[0].replace(".", r"\.")):
        load_config(config, [override])


def test_seq_len_beyond_max_seq_len_is_refused_by_the_real_cli(tmp_path):
    """Through the installed entry point, as a user runs it: exit 2, one paragraph, nothing written."""
    config = tmp_path / "run.toml"
    config.write_text(BASE)
    run_dir = tmp_path / "run"
    result = subprocess.run([str(Path(sys.executable).parent / "auroragpt"), "train", "--config", str(config),
                             f"--run.dir={run_dir}", "--data.seq_len=512", "--model.max_seq_len=256"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip()
    assert "Traceback" not in err and err.count("\n") <= 1, err
    assert "data.seq_len (512) is longer than model.max_seq_len (256)" in err
    assert not run_dir.exists()
