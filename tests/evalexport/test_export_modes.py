"""Exported and imported model folders are readable like any other file the user writes."""

from __future__ import annotations

import os
import stat

import pytest
from evalexport_models import make_model


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_export_hf_weights_have_the_umask_mode_of_the_other_files(tmp_path, umask):
    from auroragpt.export.hf import export_hf
    from auroragpt.model.io import save_model

    old = os.umask(umask)
    try:
        model = make_model()
        export_hf(model, tmp_path / "hf")
        save_model(model, tmp_path / "folder")
    finally:
        os.umask(old)
    want_file, want_dir = 0o666 & ~umask, 0o777 & ~umask
    for folder in (tmp_path / "hf", tmp_path / "folder"):
        assert stat.S_IMODE(folder.stat().st_mode) == want_dir, folder
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
        assert modes["model.safetensors"] == want_file, modes
        assert set(modes.values()) == {want_file}, modes
