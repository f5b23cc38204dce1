"""The export stage's model card (``models/<system>/README.md``): its sections, its figures with
bootstrap intervals, its listing in model.json, and the demo warning exactly when the run trained on
the synthetic corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_kd.config import load_config
from asr_kd.data.manifest import Utterance, write_manifest
from asr_kd.decoding import modeldir
from asr_kd.stages import _export
from asr_kd.decoding.stats import UttCounts
from asr_kd.nn.models import AcousticDNN
from asr_kd.paths import RunPaths
from asr_kd.stages.export import training_data

SECTIONS = ("## What it is", "## Training data", "## Test results", "## Size", "## How to run it")


def _librispeech_layout(root: Path) -> Path:
    chapter = root / "train-clean-100" / "19" / "198"
    chapter.mkdir(parents=True)
    (chapter / "19-198.trans.txt").write_text("19-198-0001 HELLO WORLD\n")
    return root


def _card(tmp_path: Path, cfg, training: dict) -> tuple[str, dict]:
    rng = np.random.default_rng(0)
    n = 40
    counts = UttCounts(tuple(f"u{i:02d}" for i in range(n)), rng.integers(0, 3, n).astype(float),
                       np.full(n, 10.0), rng.integers(50, 90, n).astype(float), np.full(n, 100.0))
    decoded = {"wer": float(counts.errors.sum() / counts.words.sum()),
               "frame_acc": float(counts.hits.sum() / counts.frames.sum()), "dev_frame_acc": 0.66}
    scores = modeldir.card_scores(counts, decoded)
    src = modeldir.ExportSources(copies={}, log_priors=np.full(17, -np.log(17)),
                                 cmvn_global={"count": 1.0, "sum": [0.0] * 40, "sumsq": [1.0] * 40},
                                 features={"num_mel_bins": 40, "sample_rate": 16000}, cmvn_mode="speaker")
    info = modeldir.export_model_dir("distilled_T2", AcousticDNN(26 * 40, 1, 16, 17), tmp_path / "m", src,
                                     left=20, right=5, mean="arithmetic", acoustic_scale=0.1,
                                     check_feats=torch.randn(30, 40).numpy(), search={},
                                     onnx_skipped="not needed here",
                                     card=_export._card_writer(cfg, "distilled_T2", training, scores))
    return (tmp_path / "m" / modeldir.CARD).read_text(), {**info, "scores": scores}


def test_the_model_card_has_its_sections_intervals_and_checksum(tmp_path) -> None:
    cfg = load_config("smoke")
    paths = RunPaths(tmp_path / "exp")
    write_manifest(paths.manifest("train"), [Utterance(f"s{i % 3}-c-{i}", f"s{i % 3}", "c", "/a.wav", "A B",
                                                       36000, 16000) for i in range(6)])
    training = training_data(cfg, paths)
    assert training["utterances"] == 6 and training["speakers"] == 3 and training["hours"] == pytest.approx(6 * 2.25 / 3600)
    card, info = _card(tmp_path, cfg, training)
    assert card.startswith("# distilled_T2\n")
    positions = [card.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    wer, (lo, hi) = info["scores"]["wer"], info["scores"]["wer_ci"]
    assert lo <= wer <= hi and lo < hi and info["scores"]["frame_acc_ci"] is not None
    assert f"{100 * wer:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]" in card
    assert "| 40 | 400 |" in card  # test utterances and reference words beside the WER
    assert "6 utterances, 3 speakers, 0.2 minutes" in card
    assert "temperature T = 2" in card and "parameters" in card and "MB on disk" in card
    assert "python -m asr_kd.transcribe distilled_T2" in card and "--backend onnx" not in card
    written = json.loads((tmp_path / "m" / "model.json").read_text())
    assert written["card"] == "README.md" and "README.md" in written["sha256"]


def test_a_synthetic_corpus_run_says_its_models_do_not_read_real_speech(tmp_path) -> None:
    training = training_data(load_config("smoke"), RunPaths(tmp_path / "exp"))  # data.root "": the synthetic corpus
    assert training["synthetic"] and "synthetic" in training["corpus"]
    card, _ = _card(tmp_path, load_config("smoke"), training)
    assert "does not read real speech" in card and "demo" in card.lower()


@pytest.mark.parametrize("generated", [False, True])
def test_a_librispeech_layout_corpus_carries_no_demo_warning_unless_it_is_the_generated_one(tmp_path,
                                                                                            generated) -> None:
    root = _librispeech_layout(tmp_path / "corpus")
    if generated:  # `python -m data_prep.synthetic --out DIR` passed as --data-root: still the synthetic corpus
        (root / "SYNTHETIC.json").write_text("{}")
    cfg = load_config("smoke", {"data.root": str(root)})
    training = training_data(cfg, RunPaths(tmp_path / "exp"))
    assert training["synthetic"] is generated
    card, _ = _card(tmp_path, cfg, training)
    assert ("does not read real speech" in card) is generated
    if not generated:
        assert str(root) in card and "## Training data" in card
