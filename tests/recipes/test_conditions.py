"""Options through the command line: augmentation in the prepare stage, and the conditions stage's
extra test sets (data.extra_test_subsets) reported beside the usual test set.

The conditions stage is run on a copy of the session's smoke run (``smoke_run``) with the smoke
corpus's dev subset named as an extra test set (LibriSpeech's dev-other and test-other are read the
same way), so only that stage and the report run here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asr_kd.data.manifest import read_manifest
from asr_kd.fileio import read_json
from asr_kd.paths import RunPaths

pytestmark = pytest.mark.slow

EXTRA = "dev-synth"  # a subset of the smoke corpus, decoded as an extra test set


def recipe(corpus: Path, exp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr_kd.recipes.librispeech", "--preset", "smoke", "--data-root",
                           str(corpus), "--exp-dir", str(exp), *args], capture_output=True, text=True, timeout=900)


def test_prepare_adds_augmented_copies_and_removes_them_when_off(tmp_path, smoke_corpus):
    exp = tmp_path / "exp"
    few = ("--set", "data.max_utts_per_split=40")  # copies of 40 training utterances show it
    res = recipe(smoke_corpus, exp, *few, "--set", "augment.speeds=0.9", "--set", "augment.pitch_copies=1",
                 "--set", "augment.reverb_copies=1", "--stop-stage", "prepare")
    assert res.returncode == 0, res.stderr[-3000:]
    paths = RunPaths(exp)
    train = read_manifest(paths.manifest("train"))
    originals = [u for u in train if not u.id.startswith(("sp", "ps", "rvb"))]
    assert 0 < len(originals) <= 40
    # every original has its three copies, each a new speaker with its own audio file
    ids = {u.id for u in train}
    for u in originals:
        assert {f"sp0.9-{u.id}", f"ps1-{u.id}", f"rvb1-{u.id}"} <= ids
    copy = next(u for u in train if u.id.startswith("sp0.9-"))
    assert copy.speaker.startswith("sp0.9-") and Path(copy.audio).is_relative_to(paths.augmented_audio.resolve())
    summary = read_json(paths.marker("prepare"))["summary"]
    assert summary["augment"]["copies"] == 3 * len(originals) == len(train) - len(originals)
    assert summary["augment"]["hours_added"] > 0 and "augment_s" in summary["augment"]
    # off again: the copies go away with the options
    res = recipe(smoke_corpus, exp, *few, "--stop-stage", "prepare", "--force", "prepare")
    assert res.returncode == 0, res.stderr[-3000:]
    assert not paths.augmented_audio.exists()
    assert not any(u.id.startswith(("sp", "ps", "rvb")) for u in read_manifest(paths.manifest("train")))


def test_conditions_stage_reports_mean_teacher_ensemble_and_student_per_extra_test_set(tmp_path, smoke_corpus,
                                                                                       smoke_run):
    exp = tmp_path / "exp"
    shutil.copytree(smoke_run, exp)
    paths = RunPaths(exp)
    extra = ("--set", f"data.extra_test_subsets={EXTRA}")
    res = recipe(smoke_corpus, exp, "--stage", "conditions", *extra)
    assert res.returncode == 1 and "--force conditions" in res.stderr and "data.extra_test_subsets" in res.stderr
    res = recipe(smoke_corpus, exp, "--stage", "conditions", "--force", "conditions", *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(paths.report_json.read_text())
    conds = {c["condition"]: c for c in report["conditions"]}
    assert set(conds) == {"test", EXTRA}
    c = conds[EXTRA]
    assert c["utterances"] == len(read_manifest(paths.eval_dir(EXTRA) / "manifest.jsonl")) > 0
    for who in ("mean_teacher", "ensemble", "student"):
        low, high = c[who]["wer_ci"]
        assert low <= c[who]["wer"] <= high
        assert 0.0 <= c[who]["frame_acc"] <= 1.0
    assert c["mean_teacher"]["systems"] == [f"teacher-{k}" for k in range(len(c["mean_teacher"]["systems"]))]
    assert c["best_student"].startswith("distilled_T") and c["scales_from"] == ["dev"]
    eval_report = read_json(paths.eval_dir(EXTRA) / "report.json")
    assert {s["system"] for s in eval_report["systems"]} >= {"ensemble", c["best_student"]}
    # every system at the scale it chose on dev, and also searched at each scale of the dev grid
    grid = {f"{g:g}" for g in read_json(paths.config)["decode"]["acoustic_scales"]}
    ens_dev_scale = read_json(paths.decode_summary("ensemble"))["acoustic_scale"]
    assert c["ensemble"]["acoustic_scales"] == [ens_dev_scale]
    assert set(c["ensemble"]["wer_by_scale"]) == grid | {f"{ens_dev_scale:g}"}
    assert c["ensemble"]["wer_by_scale"][f"{ens_dev_scale:g}"] == c["ensemble"]["wer"]
    assert EXTRA in report["lm"]["oov_rate"] and report["lm"]["perplexity"][EXTRA] > 1.0
    md = paths.report_md.read_text()
    assert "## Test conditions" in md and f"| {EXTRA} |" in md
    assert "WER at each acoustic scale" in md and f"| {EXTRA} | {min(grid, key=float)} |" in md
    assert "conditions" in report["timing"]
    # a system the run decodes again (retrained) is evaluated again; the others are reused
    evals = paths.eval_dir(EXTRA) / "decode"
    before = {n: read_json(evals / n / "summary.json") for n in ("ensemble", "teacher-0")}
    summary = paths.decode_summary("ensemble")
    os.utime(summary, ns=(summary.stat().st_atime_ns, summary.stat().st_mtime_ns + 10**9))
    res = recipe(smoke_corpus, exp, "--stage", "conditions", "--stop-stage", "conditions", "--force", "conditions",
                 *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    after = {n: read_json(evals / n / "summary.json") for n in before}
    assert after["ensemble"]["model_key"] != before["ensemble"]["model_key"]
    assert after["teacher-0"] == before["teacher-0"]
