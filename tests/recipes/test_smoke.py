"""The smoke preset end to end, through the command line a user types.

One uninterrupted run (the session fixture `smoke_run`, tests/conftest.py) is checked for the report, the stage summaries and the
quality floor; a second invocation must skip every stage; a changed config must be refused; and a
run killed inside a training stage must resume to the same models.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asr_kd.decoding.report.rows import Report

pytestmark = pytest.mark.slow

STAGES = ["prepare", "lang", "features", "align", "shards", "teachers", "ensemble", "distill", "graph",
          "decode", "conditions", "export", "report"]


def recipe(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr_kd.recipes.librispeech", *args],
                          capture_output=True, text=True, **kw)


def smoke_args(corpus: Path, exp: Path) -> list[str]:
    return ["--preset", "smoke", "--data-root", str(corpus), "--exp-dir", str(exp)]


def show(corpus: Path, exp: Path, stage: str) -> dict:
    res = recipe(*smoke_args(corpus, exp), "--show", stage)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_report_is_written_and_valid(smoke_run):
    report = json.loads((smoke_run / "report.json").read_text())
    assert Report.from_json(report).to_json() == report  # the schema, and nothing lost reading it
    systems = [row["system"] for row in report["table1"]]
    assert systems[:3] == ["baseline", "baseline_mean", "ensemble"]
    assert {"distilled_T1", "distilled_T5"} <= set(systems)
    assert [row["system"] for row in report["table5"]] == ["baseline_100", "baseline_3", "soft_3"]
    md = (smoke_run / "report.md").read_text()
    for paper_number in ("58.9", "61.1", "60.8", "44.5", "57.0"):
        assert paper_number in md
    pngs = sorted(p.name for p in smoke_run.glob("*.png"))
    assert len(pngs) >= 2 and all((smoke_run / p).stat().st_size > 1000 for p in pngs)
    assert set(report["timing"]) >= set(STAGES[:-1])


def test_gmm_and_dnn_recognise_speech(smoke_run):
    report = json.loads((smoke_run / "report.json").read_text())
    assert report["gmm"]["wer"] < 0.8
    rows = {row["system"]: row for row in report["table1"]}
    for system in ("baseline", "ensemble", "distilled_T5"):
        assert rows[system]["wer"] < 0.8, (system, rows[system])
        assert 0.2 < rows[system]["frame_acc"] < 1.0
    gmm = {row["system"]: row for row in report["gmm_systems"]}  # both GMMs of the align stage
    assert gmm["gmm_mono"]["context"] == "monophone" and gmm["gmm"]["context"] == "triphone"
    assert gmm["gmm"]["num_pdfs"] > gmm["gmm_mono"]["num_pdfs"]
    for row in gmm.values():
        assert row["wer"] < 0.8 and row["train_loglike_per_frame"] < 0 and row["dev_loglike_per_frame"] < 0
    assert "## GMM-HMM systems" in (smoke_run / "report.md").read_text()
    hyps = list((smoke_run / "decode").rglob("per_utt"))
    assert hyps, "per-utterance ref/hyp files are written"


def test_stage_summaries(smoke_run, smoke_corpus):
    align = show(smoke_corpus, smoke_run, "align")
    assert align["context"] == "triphone"
    assert align["success_rate"] >= 0.99
    assert align["num_pdfs"] > align["monophone"]["num_pdfs"]  # tied triphones: more states than monophones
    teachers = show(smoke_corpus, smoke_run, "teachers")["teachers"]
    assert len(teachers) == 3 and all(0 < t["dev"]["frame_acc"] < 1 for t in teachers)
    ensemble = show(smoke_corpus, smoke_run, "ensemble")
    assert 0 < ensemble["dev"]["frame_acc"] < 1
    distill = show(smoke_corpus, smoke_run, "distill")
    assert [s["T"] for s in distill["students"]] == [1.0, 5.0]
    assert all(0 < s["dev"]["frame_acc"] < 1 for s in distill["students"])
    assert [r["system"] for r in distill["table5"]] == ["baseline_100", "baseline_3", "soft_3"]


def test_second_run_skips_every_stage(smoke_run, smoke_corpus):
    markers = {s: (smoke_run / s / "DONE.json").stat().st_mtime_ns for s in STAGES}
    t0 = time.monotonic()
    res = recipe(*smoke_args(smoke_corpus, smoke_run), timeout=120)
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - t0 < 60
    for s in STAGES:
        assert f"stage {s:<9} done, skipping" in res.stderr
    assert {s: (smoke_run / s / "DONE.json").stat().st_mtime_ns for s in STAGES} == markers
    listing = recipe(*smoke_args(smoke_corpus, smoke_run), "--list").stdout
    assert listing.count(" done ") == len(STAGES)


def test_changed_config_is_refused_with_a_force_hint(smoke_run, smoke_corpus):
    config = (smoke_run / "config.json").read_text()
    res = recipe(*smoke_args(smoke_corpus, smoke_run), "--set", "decode.beam=9", "--stage", "decode")
    assert res.returncode == 1
    assert "stage 'decode'" in res.stderr and "--force decode" in res.stderr and "decode.beam" in res.stderr
    assert (smoke_run / "config.json").read_text() == config, "a refused change must not rewrite config.json"


def _tables(report: dict) -> dict:
    out = {}
    for row in report["table1"] + report["table5"]:
        for key, value in row.items():
            if isinstance(value, float):
                out[(row["system"], key)] = value
    return out


def _frame_accuracies(exp: Path, stage: str) -> dict:
    """Every frame accuracy in ``stage``'s summary, by its path."""
    out = {}

    def walk(obj, where):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{where}/{k}")
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                walk(v, f"{where}/{i}")
        elif isinstance(obj, float) and "frame_acc" in where:
            out[where] = obj

    walk(json.loads((exp / stage / "DONE.json").read_text())["summary"], stage)
    return out


@pytest.mark.parametrize("stage", ["teachers", "distill"])
def test_killed_training_stage_resumes_mid_epoch_to_the_same_models(stage, smoke_run, smoke_corpus, tmp_path):
    """SIGKILL the recipe inside a training stage, right after its first mid-epoch last.ckpt; the
    re-run, stopping after that stage, must resume from that step (> 0) and train the
    uninterrupted run's models: every dev, test and train frame accuracy in the stage's summary
    (the teachers; or the students and the Table-5 runs) the same. (The later stages are
    deterministic functions of those models and are not re-run here.)"""
    exp = tmp_path / "exp"
    exp.mkdir()
    for done in STAGES[: STAGES.index(stage)]:  # reuse the finished upstream stages
        shutil.copytree(smoke_run / done, exp / done, symlinks=True)
    shutil.copy(smoke_run / "config.json", exp / "config.json")
    every = ["--set", "train.checkpoint_every_n_steps=10"]  # where-not-what: the run keys stay the same
    args = [sys.executable, "-m", "asr_kd.recipes.librispeech", *smoke_args(smoke_corpus, exp), *every]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((exp / stage).rglob("last.ckpt")):
        assert proc.poll() is None, "the run ended before a checkpoint was written"
        assert time.monotonic() < deadline, f"no {stage} checkpoint within 300 s"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (exp / stage / "DONE.json").exists(), f"killed inside the {stage} stage"
    assert (exp / ".lock").exists()  # the dead run's lock is left behind ...
    res = recipe(*smoke_args(smoke_corpus, exp), *every, "--stop-stage", stage, timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "no longer running" in res.stderr  # ... and taken over
    steps = [int(m) for m in re.findall(r"resuming .* at epoch \d+, step (\d+)", res.stderr)]
    assert steps and min(steps) > 0, res.stderr[-3000:]
    assert not list((exp / stage).rglob("*-v1.ckpt")), "no versioned duplicate checkpoints"
    got, want = _frame_accuracies(exp, stage), _frame_accuracies(smoke_run, stage)
    assert got.keys() == want.keys() and len(want) > 5
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=2e-3), key


def test_changed_training_key_retrains_students_with_cached_targets(smoke_run, smoke_corpus, tmp_path):
    """Issue 19: a forced distill after a training change must rebuild the target cache, not crash."""
    exp = tmp_path / "exp"
    exp.mkdir()
    for stage in STAGES[:8]:  # a finished run up to and including distill
        shutil.copytree(smoke_run / stage, exp / stage, symlinks=True)
    shutil.copy(smoke_run / "config.json", exp / "config.json")
    res = recipe(*smoke_args(smoke_corpus, exp), "--stage", "distill", "--stop-stage", "distill",
                 "--force", "distill", "--set", "train.max_epochs=2", "--set", "distill.baseline_100=train",
                 timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "caching the ensemble's soft targets" in res.stderr
    distill = show(smoke_corpus, exp, "distill")
    assert [s["epochs"] for s in distill["students"]] == [2, 2]
    assert distill["table5"][0]["source"] == "hard-target run" and distill["table5"][0]["epochs"] == 2


def test_stored_targets_train_the_students_and_table5(smoke_run, smoke_corpus, tmp_path):
    """Issue 14: distill.targets=stored writes top-k + tail targets beside the training shards (one
    targets shard per feature shard) and trains the students and the Table-5 runs from them; --show
    distill reports them as soft_targets. (One epoch per run: the path, not the accuracy, is tested.)"""
    exp = tmp_path / "exp"
    exp.mkdir()
    for stage in STAGES[:7]:  # a finished run up to the ensemble
        shutil.copytree(smoke_run / stage, exp / stage, symlinks=True)
    shutil.copy(smoke_run / "config.json", exp / "config.json")
    res = recipe(*smoke_args(smoke_corpus, exp), "--stage", "distill", "--stop-stage", "distill",
                 "--set", "distill.targets=stored", "--set", "distill.student_max_epochs=1",
                 "--set", "distill.subset_max_epochs=1", timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
    distill = show(smoke_corpus, exp, "distill")
    soft = distill["soft_targets"]
    assert (soft["mode"], soft["form"], soft["k"]) == ("stored", "topk+tail", 64)
    assert soft["bytes_per_frame"] >= soft["payload_bytes_per_frame"] == 2 * 64 * 4  # T = 1, 5; int16 + float16
    assert set(soft["kl_to_dense"]) == {"1", "5"} and all(0 < v < 1 for v in soft["kl_to_dense"].values())
    assert [s["T"] for s in distill["students"]] == [1.0, 5.0]
    assert all(s["dev"]["frame_acc"] > 0.1 and s["epochs"] == 1 for s in distill["students"])
    assert [r["system"] for r in distill["table5"]] == ["baseline_100", "baseline_3", "soft_3"]
    assert distill["table5"][2]["dev_frame_acc"] > 0.05 and distill["table5"][2]["T"] in (1.0, 5.0)
    feature_shards = sorted(p.name for p in (exp / "shards" / "train").glob("shard-*.tar"))
    assert sorted(p.name for p in (exp / "distill" / "targets").glob("shard-*.tar")) == feature_shards
    assert (exp / "distill" / "targets" / "index.json").exists()


def test_a_finished_run_moved_elsewhere_decodes_and_reports(smoke_run, smoke_corpus, tmp_path):
    """Issue 17: a run directory can be moved. A finished run copied to a new place, with the
    original gone, re-runs decode and report to the same tables; no file it records names the old
    place (Lightning checkpoints keep their own dirpath, read only to resume an unfinished fit)."""
    moved = tmp_path / "moved" / "exp"
    shutil.copytree(smoke_run, moved, symlinks=True)
    hidden = smoke_run.with_name(smoke_run.name + ".away")
    smoke_run.rename(hidden)  # the original is gone while the copy runs
    try:
        res = recipe(*smoke_args(smoke_corpus, moved), "--force", "decode", timeout=1200)
        stale = [str(f.relative_to(moved)) for f in moved.rglob("*")
                 if f.is_file() and f.suffix in (".scp", ".json", ".jsonl", ".txt", ".md")
                 and str(smoke_run) in f.read_text(errors="replace")]
    finally:
        hidden.rename(smoke_run)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "stage decode    running" in res.stderr and "stage report    running" in res.stderr
    assert not stale, f"files naming the old run directory: {stale}"
    got = _tables(json.loads((moved / "report.json").read_text()))
    want = _tables(json.loads((smoke_run / "report.json").read_text()))
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_the_exported_student_transcribes_test_audio_as_the_decode_stage_did(smoke_run):
    """Issue 16: <exp>/models/<best student>/ alone (TorchScript = ONNX = PyTorch) turns the test
    set's audio files into words; its WER is the system's own test WER up to the CMVN it can do
    (each file normalised by itself instead of by its speaker), --json gives word times, and
    --backend onnx (onnxruntime) gives the same words at the same times."""
    import jiwer

    index = json.loads((smoke_run / "models" / "index.json").read_text())
    best = index["best_student"]
    model_dir = smoke_run / "models" / best
    for system in index["systems"]:  # every system, the ensemble's average of K nets included
        info = json.loads((smoke_run / "models" / system / "model.json").read_text())
        assert info["system"] == system
        assert info["acoustic_model"]["torchscript_max_abs_diff"] <= 1e-4
        assert info["acoustic_model"]["onnx"]["file"] == "am.onnx", info["acoustic_model"]["onnx"]
        assert info["acoustic_model"]["onnx"]["max_abs_diff"] <= 1e-4
        assert set(info["sha256"]) >= {"am.pt", "am.onnx", "HCLG.fst", "words.txt", "final.mdl", "log_priors.npy",
                                       "cmvn.json"}
    utts = [json.loads(line) for line in (smoke_run / "prepare" / "manifest-test.jsonl").read_text().splitlines()][:10]
    away = smoke_run.with_name(smoke_run.name + ".hidden")  # only the model directory may be read
    shutil.copytree(model_dir, away / "model")
    runs = {backend: subprocess.run([sys.executable, "-m", "asr_kd.transcribe", str(away / "model"), "--json",
                                     "--backend", backend, *[u["audio"] for u in utts]],
                                    capture_output=True, text=True, timeout=600)
            for backend in ("torchscript", "onnx")}
    shutil.rmtree(away)
    for res in runs.values():
        assert res.returncode == 0, res.stderr[-3000:]
    out, onnx_out = ([json.loads(line) for line in runs[b].stdout.splitlines()] for b in ("torchscript", "onnx"))
    assert [(o["utt"], o["words"]) for o in onnx_out] == [(o["utt"], o["words"]) for o in out]
    assert [o["utt"] for o in out] == [u["id"] for u in utts]
    wer = jiwer.wer([u["text"] for u in utts], [o["text"] or "<empty>" for o in out])
    report = json.loads((smoke_run / "report.json").read_text())
    row = next(r for r in report["table1"] if r["system"] == best)
    low, high = row["wer_ci"]
    assert wer <= high + 0.05, (wer, row["wer"], row["wer_ci"])
    timed = [w for o in out for w in o["words"] if w["start"] is not None]
    assert len(timed) >= 0.9 * sum(len(o["words"]) for o in out)
    assert all(0 <= w["start"] < w["end"] <= o["duration"] + 0.05 for o in out for w in o["words"] if w["start"] is not None)
    assert all(o["rtf"] > 0 for o in out)
    md = (smoke_run / "report.md").read_text()
    assert "## Deployment" in md and "ensemble" in md and "ONNX Runtime RTF" in md
    deployment = report["deployment"]
    assert deployment["onnx"]["written"] == len(index["systems"]) and not deployment["onnx"]["skipped"]
    assert all(r["onnx_whole_utterance_rtf"] > 0 and r["onnx_streaming_batch1_rtf"] > 0 for r in deployment["systems"])


def test_evaluate_on_a_resynthesised_test_set_and_again_skips_finished_work(smoke_run, tmp_path):
    """Issue 16: `python -m asr_kd.evaluate` scores the run's systems on new audio (the smoke test
    sentences spoken again by the generator with another seed) into EXP/eval/<name>/, touching
    nothing else in the run; a second call reuses its features, labels and decodes."""
    corpus = tmp_path / "seed1"
    gen = subprocess.run([sys.executable, "-m", "data_prep.synthetic", "--out", str(corpus), "--size", "smoke",
                          "--seed", "1"], capture_output=True, text=True, timeout=900)
    assert gen.returncode == 0, gen.stderr[-3000:]
    before = {p: p.stat().st_mtime_ns for p in smoke_run.rglob("*") if p.is_file()}
    args = [sys.executable, "-m", "asr_kd.evaluate", "--exp-dir", str(smoke_run), "--data-root", str(corpus),
            "--systems", "ensemble,distilled_T5", "--max-utts", "8", "--name", "seed1"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((smoke_run / "eval" / "seed1" / "report.json").read_text())
    assert report["utterances"] == 8 and [s["system"] for s in report["systems"]] == ["ensemble", "distilled_T5"]
    for s in report["systems"]:
        assert s["wer"] < 0.8 and s["wer_ci"][0] <= s["wer"] <= s["wer_ci"][1]
        assert 0.2 < s["frame_acc"] < 1.0 and s["wer_per_speaker"]
    assert "## WER per speaker" in (smoke_run / "eval" / "seed1" / "report.md").read_text()
    after = {p: p.stat().st_mtime_ns for p in smoke_run.rglob("*") if p.is_file() and "eval" not in p.parts}
    assert after == before, "evaluate must not change the run directory outside eval/"
    second = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reusing" in second.stderr and second.stderr.count("done, skipping") == 2
    assert json.loads((smoke_run / "eval" / "seed1" / "report.json").read_text()) == report
    shutil.rmtree(smoke_run / "eval")
