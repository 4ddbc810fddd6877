"""Every subcommand answers bad input with one paragraph and exit code 2, never a traceback.

Subcommands are enumerated from the CLI parser, so a new one is covered without editing this
file: each path argument gets a path under a regular file (it can be neither read nor created),
each number a plain valid number. A few commands need a more specific bad input (CASES).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest

from auroragpt.cli import build_parser

# Commands whose generic bad input would not reach them (no path argument, or a free command line);
# every other subcommand, including any added later, gets the generic one.
CASES = {
    ("launch",): lambda bad: ["--hostfile", bad, "--", "true"],
    ("doctor",): lambda bad: ["--no-such-option"],  # takes no input but its options
    ("weather", "simulate"): lambda bad: ["--grid", "8x16", "--days", "0.5", "--spinup-days", "0", "--out", bad],
}
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")  # a log line is not part of the error


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, (*path, name))


def _generic_args(parser: argparse.ArgumentParser, bad: str) -> list[str]:
    args: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not (action.required or not action.option_strings):
            continue
        value = "16" if action.type in (int, float) else bad
        if action.option_strings:
            args += [action.option_strings[0], value]
        else:
            args.append(value)
    return args


LEAVES = [(path, parser) for path, parser in _leaves(build_parser())]


@pytest.mark.parametrize("path,parser", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_bad_input_is_one_paragraph_and_exit_2(tmp_path, path, parser):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    bad = str(blocker / "inside")
    case = CASES.get(path)
    extra = case(bad) if case else _generic_args(parser, bad)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
        env.pop(name, None)  # a plain shell, not a rank of a job
    argv = [sys.executable, "-m", "auroragpt.cli", *path, *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    err = proc.stderr.strip()
    where = f"{' '.join(argv[2:])}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 2, where
    assert "Traceback" not in proc.stderr + proc.stdout and 'File "' not in proc.stderr, where
    lines = [line for line in err.splitlines() if not LOG_LINE.match(line)]
    assert lines and lines[0].startswith("auroragpt") and ": error: " in lines[0], where
    assert "" not in [line.strip() for line in lines] and len(lines) <= 4, where  # one paragraph


def test_every_subcommand_is_covered():
    names = {" ".join(p) for p, _ in LEAVES}
    assert {"train", "eval", "serve", "launch", "doctor", "export hf", "import hf", "data blend"} <= names
    assert all(p in {q for q, _ in LEAVES} for p in CASES)
