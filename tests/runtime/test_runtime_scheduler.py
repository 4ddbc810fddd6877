"""Scheduler detection, hostfiles and Slurm node-list expansion."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auroragpt.runtime.scheduler import detect_allocation, detect_scheduler, expand_nodelist, read_hostfile
from auroragpt.errors import LaunchError


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("x[1000-1003,1007],y[01-02]", ["x1000", "x1001", "x1002", "x1003", "x1007", "y01", "y02"]),
        ("nid[000998-001001]", ["nid000998", "nid000999", "nid001000", "nid001001"]),
        ("node7", ["node7"]),
        ("a1,b2,c[3]", ["a1", "b2", "c3"]),
        ("x4102c6s[0-1]b0n0", ["x4102c6s0b0n0", "x4102c6s1b0n0"]),
        ("gpu[08-11]", ["gpu08", "gpu09", "gpu10", "gpu11"]),
    ],
)
def test_expand_nodelist(nodelist: str, hosts: list[str]) -> None:
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("nodelist", ["nid[0010-", "nid[5-2]", "x[1,a]", "x[1-2]]", "", "a,,b", "a,", "[1-2]"])
def test_malformed_nodelist_is_explained(nodelist: str) -> None:
    with pytest.raises(LaunchError) as err:
        expand_nodelist(nodelist)
    assert "Slurm node list" in err.value.message and "x[1000-1003,1007]" in err.value.hint


def test_hostfile_reading(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("# allocated\nx1000c0s0b0n0\nx1000c0s0b0n0\n\nx1000c0s1b0n0 slots=12\nx1000c0s2b0n0:12\n")
    assert read_hostfile(path) == ("x1000c0s0b0n0", "x1000c0s1b0n0", "x1000c0s2b0n0")
    (tmp_path / "empty").write_text("\n# nothing\n")
    with pytest.raises(LaunchError, match="is empty"):
        read_hostfile(tmp_path / "empty")
    with pytest.raises(LaunchError, match="does not exist"):
        read_hostfile(tmp_path / "missing")
    (tmp_path / "bad").write_text("x1000@c0\n")
    with pytest.raises(LaunchError, match="line 1"):
        read_hostfile(tmp_path / "bad")


def test_detect_scheduler_and_allocation(tmp_path: Path) -> None:
    nodefile = tmp_path / "8219135.aurora-pbs-0001"
    nodefile.write_text("x4102c6s0b0n0\nx4102c6s1b0n0\n")
    pbs = {"PBS_JOBID": "8219135.aurora-pbs-0001.hostmgmt.cm.aurora.alcf.anl.gov", "PBS_NODEFILE": str(nodefile)}
    assert detect_scheduler(pbs) == "pbs"
    assert detect_allocation(pbs).hosts == ("x4102c6s0b0n0", "x4102c6s1b0n0")
    slurm = {"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "nid[001000-001001]"}
    assert detect_scheduler(slurm) == "slurm"
    assert detect_allocation(slurm).hosts == ("nid001000", "nid001001")
    assert detect_scheduler({}) == "none" and len(detect_allocation({}).hosts) == 1
    with pytest.raises(LaunchError, match="PBS_NODEFILE is not"):
        detect_allocation({"PBS_JOBID": "1"})


_prefixes = st.text(alphabet="abcxyz-", min_size=1, max_size=4).filter(lambda p: not p[-1].isdigit())
_ranges = st.tuples(st.integers(0, 500), st.integers(0, 20), st.integers(1, 5))  # start, length, width


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_prefixes, st.lists(_ranges, min_size=1, max_size=3)), min_size=1, max_size=3))
def test_expand_nodelist_matches_an_independent_expansion(groups: list) -> None:
    text_parts, expected = [], []
    for prefix, ranges in groups:
        pieces = []
        for start, length, width in ranges:
            first, last = str(start).zfill(width), str(start + length).zfill(width)
            pieces.append(first if length == 0 else f"{first}-{last}")
            padded = first.startswith("0")
            expected += [prefix + (str(n).zfill(len(first)) if padded else str(n)) for n in range(start, start + length + 1)]
        text_parts.append(f"{prefix}[{','.join(pieces)}]")
    assert expand_nodelist(",".join(text_parts)) == expected
