"""The WER study (recipes/librispeech/local/wer_study.py) on the shared smoke run: with the recipe's
label-count priors at the scale the run chose, it reproduces the run's own test WER and frame
accuracy (the study measures the recipe's setup, then varies it); its other rows are well formed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_the_study_reproduces_the_runs_own_decode(smoke_run: Path, tmp_path: Path) -> None:
    summary = json.loads((smoke_run / "decode" / "ensemble" / "summary.json").read_text())
    scale = summary["acoustic_scale"]
    out = tmp_path / "study"
    res = subprocess.run([sys.executable, str(ROOT / "recipes/librispeech/local/wer_study.py"), "--exp-dir",
                          str(smoke_run), "--out", str(out), "--systems", "ensemble", "--scales", f"{scale:g},0.2",
                          "--dev-utts", "5", "--prior-utts", "5"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    study = json.loads((out / "wer_study.json").read_text())
    row = study["systems"]["ensemble"]
    assert row["label_counts"]["test_wer_by_scale"][f"{scale:g}"] == pytest.approx(summary["wer"])
    assert row["calibration"]["frame_acc"] == pytest.approx(summary["frame_acc"])
    assert row["calibration"]["frames"] > 0 and 0.0 <= row["calibration"]["ece"] <= 1.0
    assert row["mean_posterior"]["scale"] in (scale, 0.2) and 0.0 <= row["mean_posterior"]["test_wer"]
    md = (out / "wer_study.md").read_text()
    assert "### Priors" in md and "### Calibration of the test-frame posteriors" in md
