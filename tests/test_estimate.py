"""``--estimate``: every stage's predicted cost, before anything runs, from the shipped reference costs."""

from __future__ import annotations

import time

import pytest

from asr_kd.recipes import estimate
from asr_kd.config import load_config
from asr_kd.recipes.librispeech import STAGES, main


@pytest.mark.parametrize("preset", ["librispeech-100h", "paper"])
def test_estimate_prints_every_stage_in_seconds(preset, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is written: no exp/ appears
    t0 = time.time()
    assert main(["--preset", preset, "--estimate", "--cores", "32", "--gpus", "8"]) == 0
    assert time.time() - t0 < 10
    out = capsys.readouterr().out
    lines = out.splitlines()
    for stage in STAGES:
        assert any(line.startswith(stage.name + " ") for line in lines), stage.name
    assert any(line.startswith("total ") for line in lines)
    assert "LibriSpeech" in out and "loader: supply" in out
    assert not (tmp_path / "exp").exists()


def test_estimate_needs_hours_for_an_unknown_corpus(capsys, tmp_path):
    rc = main(["--preset", "librispeech-100h", "--estimate", "--data-root", str(tmp_path),
               "--set", "data.train_subsets=my-train"])
    assert rc == 2
    assert "--hours" in capsys.readouterr().err
    assert main(["--preset", "librispeech-100h", "--estimate", "--data-root", str(tmp_path),
                 "--set", "data.train_subsets=my-train", "--hours", "50"]) == 0


def _teachers(rows):
    return next(r for r in rows if r.stage == "teachers")


def test_training_time_follows_the_work():
    """Twice the epochs or twice the hours: twice the teachers' time; on GPUs, FLOPs at the stated MFU."""
    costs = estimate.load_costs()
    cfg = load_config("librispeech-100h")
    corpus = estimate.corpus_of(cfg, costs)
    one = _teachers(estimate.predict(cfg, corpus, costs, cores=16, stages=["teachers"]))
    two = _teachers(estimate.predict(load_config("librispeech-100h", {"train.max_epochs": cfg.train.max_epochs * 2}),
                                     corpus, costs, cores=16, stages=["teachers"]))
    assert two.wall_s == pytest.approx(2 * one.wall_s, rel=0.05)
    double = estimate.corpus_of(cfg, costs, hours=2 * corpus.get("train").hours)
    assert _teachers(estimate.predict(cfg, double, costs, cores=16, stages=["teachers"])).wall_s == pytest.approx(
        2 * one.wall_s, rel=0.05)
    gpu = _teachers(estimate.predict(cfg, corpus, costs, cores=16, gpus=4, mfu=0.5, stages=["teachers"]))
    flops = estimate.work_units(cfg, corpus, estimate.num_pdfs_of(cfg, costs))["teachers"]["train_flops"]
    arithmetic = flops / (4 * estimate.H100_BF16_DENSE_FLOPS * 0.5)  # unless the loader is slower
    assert gpu.wall_s - costs["startup_s"] >= arithmetic * (1 - 1e-9)
    if not any("loader-bound" in n for n in gpu.notes):
        assert gpu.wall_s - costs["startup_s"] == pytest.approx(arithmetic)


def test_librispeech_corpus_sizes():
    costs = estimate.load_costs()
    corpus = estimate.corpus_of(load_config("paper"), costs)
    assert corpus.get("train").hours == pytest.approx(960.9, abs=0.1)
    assert set(corpus.splits) == {"train", "dev", "test", "dev-other", "test-other"}


def test_synthetic_corpus_from_the_generator_counts():
    costs = estimate.load_costs()
    tiny = estimate.corpus_of(load_config("tiny"), costs)
    small = estimate.corpus_of(load_config("tiny", {"data.synthetic_size": "small"}), costs)
    assert tiny.get("train").utts == 1200
    assert small.get("train").utts == 4800


def test_book_sentences_are_read_longer_than_the_templates():
    # tiny-wer: 1,000 test utterances of ~17 words (5.8 s each), not the template's ~3.5 s
    costs = estimate.load_costs()
    wer = estimate.corpus_of(load_config("tiny-wer"), costs)
    assert wer.get("test").utts == 1000
    assert wer.get("test").hours == pytest.approx(1.62, abs=0.02)
    assert wer.get("train").hours == pytest.approx(1.32, abs=0.02)
    assert "books" in wer.source


def test_decode_searches_dev_only_for_the_systems_that_choose_their_own_scale():
    """Teachers 1..K-1 taking teacher 0's scale and the other students the best one's (the tiny
    preset): each of them searches test once and dev not at all."""
    costs = estimate.load_costs()
    each = load_config("tiny", {"decode.teacher_scale": "each", "decode.student_scale": "each"})
    corpus = estimate.corpus_of(each, costs)
    dev_h, test_h = corpus.get("dev").hours, corpus.get("test").hours
    pdfs = estimate.num_pdfs_of(each, costs)
    scales, gmm = len(each.decode.acoustic_scales), len(each.decode.gmm_acoustic_scales)
    k, students = each.teachers.num_teachers, len(each.distill.temperatures)
    n_sys = k + 1 + students + 2  # teachers, the ensemble, the students, Table 5's hard and soft runs
    gmm_h = gmm * dev_h + test_h
    assert estimate.work_units(each, corpus, pdfs)["decode"]["search_audio_hours"] == pytest.approx(
        n_sys * (scales * dev_h + test_h) + gmm_h)
    shared = load_config("tiny", {"decode.teacher_scale": "first", "decode.student_scale": "best"})
    assert estimate.work_units(shared, corpus, pdfs)["decode"]["search_audio_hours"] == pytest.approx(
        (n_sys - (k - 1) - (students - 1)) * scales * dev_h + n_sys * test_h + gmm_h)
