"""A run of the recipe launched another way (several ranks, SLURM jobs) against the session's
one-process smoke run: the stages it copies from that run, and how close its report must be."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

# The costly stages before training and the graph: run once by smoke_run, copied (found done).
COPIED = ("prepare", "lang", "features", "align", "graph")
# Several ranks sum gradients in another order than one process; ~850 Adam steps amplify the
# rounding (measured on the smoke teachers: train loss within 2e-4 after epoch 0, dev frame accuracy
# within 0.8 points after a 4th epoch). Frame accuracies within 2 points, WERs of the main systems
# within 3 points (WERs are fractions; the smoke test set is small: a WER point is a few words).
FRAME_ACC_TOL = 0.02
WER_TOL = 0.03


def copy_until_training(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for stage in COPIED:
        shutil.copytree(src / stage, dst / stage, symlinks=True)
    shutil.copy2(src / "config.json", dst / "config.json")


def single_temperature(smoke_run: Path) -> float:
    """The temperature of the one-process run's Table-5 soft run: the one student a cheaper run trains."""
    return json.loads((smoke_run / "distill" / "DONE.json").read_text())["summary"]["table5"][2]["T"]


def rows(report: dict) -> dict[str, dict]:
    return {row["system"]: row for row in report["table1"] + report["table5"]}


def assert_reports_match(single_exp: Path, other_exp: Path, T: float) -> None:
    """The other run's report has the one-process run's systems (one student, at T) and figures
    within the tolerances above."""
    single, other = (rows(json.loads((e / "report.json").read_text())) for e in (single_exp, other_exp))
    student = f"distilled_T{T:g}"
    assert set(other) == set(single) - {f"distilled_T{t:g}" for t in (1, 5) if t != T}
    # baseline_3 (3 % of the data, early stopping) is too unstable at smoke size to compare closely
    for name in ["baseline", "ensemble", student, "baseline_100", "soft_3"]:
        a, b = single[name], other[name]
        for key in ("frame_acc", "test_frame_acc", "dev_frame_acc"):
            if a.get(key) is not None:
                assert b[key] == pytest.approx(a[key], abs=FRAME_ACC_TOL), (name, key)
    for name in ["baseline", "ensemble", student, "baseline_100"]:
        assert other[name]["wer"] == pytest.approx(single[name]["wer"], abs=WER_TOL), name
