"""Kaldi ark/scp tables: ark names relative to the scp, so a moved run directory still reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import kaldiio
import numpy as np

from asr_kd.data.scp import ark_scp_writer, load_scp


def test_tables_read_after_their_directory_moves(tmp_path: Path) -> None:
    mats = {"a-1-0000": np.arange(6, dtype=np.float32).reshape(3, 2), "a-1-0001": np.ones((2, 2), np.float32)}
    scp = tmp_path / "run" / "features" / "train" / "fbank.scp"
    with ark_scp_writer(scp) as out:
        for key, m in mats.items():
            out.write(key, m)
    assert all(line.split()[1].startswith("fbank.ark:") for line in scp.read_text().splitlines())
    moved = Path(shutil.move(str(tmp_path / "run"), str(tmp_path / "elsewhere")))
    table = load_scp(moved / "features" / "train" / "fbank.scp")
    assert sorted(table) == sorted(mats)
    for key, m in mats.items():
        np.testing.assert_array_equal(table[key], m)


def test_absolute_names_of_older_runs_still_read(tmp_path: Path) -> None:
    ark, scp = tmp_path / "old.ark", tmp_path / "old.scp"
    kaldiio.save_ark(str(ark), {"u": np.eye(2, dtype=np.float32)}, scp=str(scp))
    assert str(ark) in scp.read_text()  # kaldiio writes the name as given (absolute here)
    np.testing.assert_array_equal(load_scp(scp)["u"], np.eye(2, dtype=np.float32))
