"""Generalisation options through the command line: augmentation and the cross-synthesizer split in
the prepare stage, and the conditions stage's report beside the usual test set.

The conditions stage is run on a copy of the session's smoke run (``smoke_run``) with a condition
manifest written by hand, so only that stage and the report run here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asr_kd.data.manifest import read_manifest, write_manifest
from asr_kd.fileio import read_json
from asr_kd.paths import SPLITS, RunPaths
from data_prep.synthetic import speaker_synthesizers

pytestmark = pytest.mark.slow


def recipe(corpus: Path, exp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr_kd.recipes.librispeech", "--preset", "smoke", "--data-root",
                           str(corpus), "--exp-dir", str(exp), *args], capture_output=True, text=True, timeout=900)


def test_prepare_splits_by_synthesizer_and_adds_augmented_copies(tmp_path, smoke_corpus):
    exp = tmp_path / "exp"
    res = recipe(smoke_corpus, exp, "--set", "data.train_synthesizer=flite", "--set", "augment.speeds=0.9",
                 "--set", "augment.pitch_copies=1", "--set", "augment.reverb_copies=1", "--stop-stage", "prepare")
    assert res.returncode == 0, res.stderr[-3000:]
    paths = RunPaths(exp)
    synth = speaker_synthesizers(smoke_corpus)
    train = read_manifest(paths.manifest("train"))
    originals = [u for u in train if not u.id.startswith(("sp", "ps", "rvb"))]
    assert {synth[u.speaker] for u in originals} == {"flite"}
    for split in ("dev", "test"):
        assert {synth[u.speaker] for u in read_manifest(paths.manifest(split))} == {"flite"}
    cross = read_manifest(paths.condition_manifest("cross-synth"))
    # every espeak-ng speaker of the corpus (train, dev and test: none is trained on), at most 10
    # utterances each (smoke's dev and test speakers have 5, its training speakers 25)
    assert {u.speaker for u in cross} == {spk for spk, s in synth.items() if s == "espeak"}
    per_speaker = {spk: sum(u.speaker == spk for u in cross) for spk in {u.speaker for u in cross}}
    assert set(per_speaker.values()) == {5, 10}
    # every original has its three copies, each a new speaker with its own audio file
    ids = {u.id for u in train}
    for u in originals:
        assert {f"sp0.9-{u.id}", f"ps1-{u.id}", f"rvb1-{u.id}"} <= ids
    copy = next(u for u in train if u.id.startswith("sp0.9-"))
    assert copy.speaker.startswith("sp0.9-") and Path(copy.audio).is_relative_to(paths.augmented_audio.resolve())
    summary = read_json(paths.marker("prepare"))["summary"]
    assert summary["augment"]["copies"] == 3 * len(originals) == len(train) - len(originals)
    assert summary["augment"]["hours_added"] > 0 and "augment_s" in summary["augment"]
    assert summary["synthesizers"]["conditions"]["cross-synth"]["utterances"] == len(cross)
    # a tuning set: some of those speakers, spread over their ids, go to cross-synth-dev instead
    res = recipe(smoke_corpus, exp, "--set", "data.train_synthesizer=flite", "--set", "data.cross_synth_dev_speakers=2",
                 "--stop-stage", "prepare", "--force", "prepare")
    assert res.returncode == 0, res.stderr[-3000:]
    dev = read_manifest(paths.condition_manifest("cross-synth-dev"))
    test = read_manifest(paths.condition_manifest("cross-synth"))
    dev_spk, test_spk = {u.speaker for u in dev}, {u.speaker for u in test}
    assert len(dev_spk) == 2 and not dev_spk & test_spk and dev_spk | test_spk == {u.speaker for u in cross}
    assert sorted(u.id for u in dev + test) == sorted(u.id for u in cross)
    conditions = read_json(paths.marker("prepare"))["summary"]["synthesizers"]["conditions"]
    assert conditions["cross-synth-dev"]["speakers"] == 2 and conditions["cross-synth"]["utterances"] == len(test)
    # asking for every speaker leaves nothing to test on: an error that names the setting
    n = len(dev_spk | test_spk)
    res = recipe(smoke_corpus, exp, "--set", "data.train_synthesizer=flite", "--set",
                 f"data.cross_synth_dev_speakers={n}", "--stop-stage", "prepare", "--force", "prepare")
    assert res.returncode != 0 and "data.cross_synth_dev_speakers" in res.stderr
    # off again: the copies and the conditions go away with the options
    res = recipe(smoke_corpus, exp, "--stop-stage", "prepare", "--force", "prepare")
    assert res.returncode == 0, res.stderr[-3000:]
    assert not paths.augmented_audio.exists() and not paths.condition_manifest("cross-synth").exists()
    assert not paths.condition_manifest("cross-synth-dev").exists()
    assert not any(u.id.startswith(("sp", "ps", "rvb")) for u in read_manifest(paths.manifest("train")))


def test_conditions_stage_reports_mean_teacher_ensemble_and_student_per_condition(tmp_path, smoke_corpus, smoke_run):
    exp = tmp_path / "exp"
    shutil.copytree(smoke_run, exp)
    paths = RunPaths(exp)
    test = read_manifest(paths.manifest("test"))
    synth = speaker_synthesizers(smoke_corpus)
    flite = [u for u in test if synth[u.speaker] == "flite"]
    tuning = sorted({u.speaker for u in flite})[0]  # one flite voice tunes the scales, the other is tested
    write_manifest(paths.condition_manifest("cross-synth-dev"), [u for u in flite if u.speaker == tuning])
    write_manifest(paths.condition_manifest("cross-synth"), [u for u in flite if u.speaker != tuning])
    # a scale the dev grid lacks, searched on the conditions only (the decode stage stays done)
    res = recipe(smoke_corpus, exp, "--stage", "conditions", "--force", "conditions",
                 "--set", "decode.condition_scales=0.06")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(paths.report_json.read_text())
    conds = {c["condition"]: c for c in report["conditions"]}
    assert set(conds) == {"test", "cross-synth-dev", "cross-synth"}
    c = conds["cross-synth"]
    assert c["utterances"] == len([u for u in flite if u.speaker != tuning])
    for who in ("mean_teacher", "ensemble", "student"):
        low, high = c[who]["wer_ci"]
        assert low <= c[who]["wer"] <= high
        assert 0.0 <= c[who]["frame_acc"] <= 1.0
    assert c["mean_teacher"]["systems"] == [f"teacher-{k}" for k in range(len(c["mean_teacher"]["systems"]))]
    assert c["best_student"].startswith("distilled_T")
    # the same systems on the same utterances as the decode stage's test split: the condition's
    # ensemble WER is a subset of it, so it must be a WER the decode stage could have produced
    eval_report = read_json(paths.eval_dir("cross-synth") / "report.json")
    assert {s["system"] for s in eval_report["systems"]} >= {"ensemble", c["best_student"]}
    # every system is also searched at each scale of the dev grid. On cross-synth-dev each is scored
    # at its own dev choice; on cross-synth at the scale with its lowest WER on cross-synth-dev (ties:
    # the smaller), and that is the WER above (the same hypotheses); the report shows both
    grid = {f"{g:g}" for g in read_json(paths.config)["decode"]["acoustic_scales"]} | {"0.06"}
    ens_dev_scale = f"{read_json(paths.decode_summary('ensemble'))['acoustic_scale']:g}"
    tune = conds["cross-synth-dev"]
    assert tune["scales_from"] == ["dev"] and c["scales_from"] == ["cross-synth-dev"]
    assert set(tune["ensemble"]["wer_by_scale"]) == grid | {ens_dev_scale}
    assert tune["ensemble"]["wer_by_scale"][ens_dev_scale] == tune["ensemble"]["wer"]
    by_scale = tune["ensemble"]["wer_by_scale"]
    ens_scale = min(by_scale, key=lambda g: (by_scale[g], float(g)))
    assert c["ensemble"]["acoustic_scales"] == [float(ens_scale)]
    assert c["ensemble"]["wer_by_scale"][ens_scale] == c["ensemble"]["wer"]
    assert set(c["mean_teacher"]["wer_by_scale"]) >= grid
    md = paths.report_md.read_text()
    assert "## Test conditions" in md and "| cross-synth (scales from cross-synth-dev) |" in md
    assert "WER at each acoustic scale" in md and f"| cross-synth | {min(grid, key=float)} |" in md
    assert "(cross-synth-dev) |" in (paths.eval_dir("cross-synth") / "report.md").read_text()
    assert "conditions" in report["timing"]
    # a system the run decodes again (retrained) is evaluated again; the others are reused
    evals = paths.eval_dir("cross-synth") / "decode"
    before = {n: read_json(evals / n / "summary.json") for n in ("ensemble", "teacher-0")}
    summary = paths.decode_summary("ensemble")
    os.utime(summary, ns=(summary.stat().st_atime_ns, summary.stat().st_mtime_ns + 10**9))
    res = recipe(smoke_corpus, exp, "--stage", "conditions", "--stop-stage", "conditions", "--force", "conditions",
                 "--set", "decode.condition_scales=0.06")
    assert res.returncode == 0, res.stderr[-3000:]
    after = {n: read_json(evals / n / "summary.json") for n in before}
    assert after["ensemble"]["model_key"] != before["ensemble"]["model_key"]
    assert after["teacher-0"] == before["teacher-0"]
