"""The model directory's network wrapper (TorchScript = ONNX = PyTorch), its cost figures, and word
times on the best path (tiny hand-made graph)."""

from __future__ import annotations

import sys

import kaldi_hmm_gmm as khg
import numpy as np
import pytest
import torch
from tests.graph_fixture import LEXICON, build_tiny_graph, posteriorgram

from asr_kd.decoding import modeldir
from asr_kd.decoding import search as decode
from asr_kd.nn.ensemble import Ensemble, utterance_log_posteriors
from asr_kd.nn.models import AcousticDNN, StackedDNN


@pytest.mark.parametrize("members", [1, 3])
def test_frame_posteriors_match_the_training_code_and_survive_torchscript(members, tmp_path) -> None:
    nets = [AcousticDNN(26 * 40, 2, 32, 17, seed=s) for s in range(members)]
    if members == 1:
        net, reference = nets[0], nets[0]
    else:
        net = StackedDNN.from_members(nets)
        reference = Ensemble(StackedDNN.from_members(nets), "arithmetic")
    feats = torch.randn(123, 40)
    want = utterance_log_posteriors(reference, feats, 20, 5, precision="32-true")
    module = modeldir.FramePosteriors(net, 20, 5).eval()
    with torch.no_grad():
        got = module(feats)
        traced = torch.jit.trace(module, feats[:40], check_trace=False)  # traced on 40 frames ...
        torch.jit.save(traced, str(tmp_path / "am.pt"))
        again = torch.jit.load(str(tmp_path / "am.pt"))(feats)  # ... run on 123
    assert got.shape == (123, 17)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, want, atol=1e-5, rtol=0)


def _sources(num_pdfs: int) -> modeldir.ExportSources:
    return modeldir.ExportSources(copies={}, log_priors=np.full(num_pdfs, -np.log(num_pdfs)),
                                  cmvn_global={"count": 1.0, "sum": [0.0] * 40, "sumsq": [1.0] * 40},
                                  features={"num_mel_bins": 40, "sample_rate": 16000}, cmvn_mode="speaker")


def _export(out_dir, net, feats, **kw):
    return modeldir.export_model_dir("ensemble", net, out_dir, _sources(17), left=20, right=5, mean="arithmetic",
                                     acoustic_scale=0.1, check_feats=feats.numpy(), search={}, **kw)


def test_the_ensemble_exports_to_onnx_that_onnxruntime_runs_as_pytorch_does(tmp_path) -> None:
    """Issue 16: am.onnx beside am.pt, the K-member average included; any number of frames (the
    export saw 64), fewer than a window too; checked and recorded in model.json."""
    nets = [AcousticDNN(26 * 40, 2, 32, 17, seed=s) for s in range(3)]
    reference = Ensemble(StackedDNN.from_members(nets), "arithmetic")
    feats = torch.randn(150, 40)
    info = _export(tmp_path / "ensemble", StackedDNN.from_members(nets), feats)
    onnx_info = info["acoustic_model"]["onnx"]
    assert info["system"] == "ensemble"
    assert onnx_info["file"] == "am.onnx" and onnx_info["opset"] >= 18
    assert 0 <= onnx_info["max_abs_diff"] <= modeldir.EXPORT_ATOL
    assert "am.onnx" in info["sha256"] and (tmp_path / "ensemble" / "am.onnx").stat().st_size > 0
    am = modeldir.OnnxPosteriors(tmp_path / "ensemble" / "am.onnx", threads=1)
    for frames in (97, 3):
        x = torch.randn(frames, 40)
        want = utterance_log_posteriors(reference, x, 20, 5, precision="32-true")
        torch.testing.assert_close(am(x), want, atol=1e-5, rtol=0)


def test_without_onnxruntime_the_model_dir_says_why_it_has_no_onnx(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    why = modeldir.onnx_unavailable()
    assert why and "onnxruntime" in why and "requirements.lock" in why
    info = _export(tmp_path / "m", AcousticDNN(26 * 40, 1, 16, 17), torch.randn(40, 40), onnx_skipped=why)
    assert info["acoustic_model"]["onnx"] == {"file": None, "skipped": why}
    assert not (tmp_path / "m" / "am.onnx").exists() and (tmp_path / "m" / "am.pt").exists()


def test_an_onnx_network_that_differs_from_pytorch_fails_the_export(tmp_path, monkeypatch) -> None:
    """The check runs the written file: a network other than the model's (here: another seed's)
    stops the export with the difference and the tolerance, and leaves no model directory."""
    other = modeldir.FramePosteriors(AcousticDNN(26 * 40, 1, 16, 17, seed=1), 20, 5).eval()
    real_export = modeldir.export_onnx
    monkeypatch.setattr(modeldir, "export_onnx", lambda module, example, path: real_export(other, example, path))
    with pytest.raises(ValueError, match=r"teacher-0: am.onnx run by onnxruntime .* differs from the PyTorch model"):
        modeldir.export_model_dir("teacher-0", AcousticDNN(26 * 40, 1, 16, 17, seed=0), tmp_path / "t", _sources(17),
                                  left=20, right=5, mean="arithmetic", acoustic_scale=0.1,
                                  check_feats=np.random.randn(40, 40).astype(np.float32), search={})
    assert not (tmp_path / "t").exists() and not list(tmp_path.iterdir())


def test_flops_per_frame_count_every_member() -> None:
    net = AcousticDNN(1040, 2, 100, 50)
    one = 2 * (1040 * 100 + 100 * 100 + 100 * 50)
    assert modeldir.forward_flops_per_frame(net) == one
    assert modeldir.forward_flops_per_frame(StackedDNN.from_members([net, net, net])) == 3 * one


def test_rtf_figures_are_positive_and_named() -> None:
    module = torch.jit.trace(modeldir.FramePosteriors(AcousticDNN(1040, 2, 64, 30), 20, 5).eval(),
                             torch.randn(40, 40), check_trace=False)
    out = modeldir.measure_rtf(module, np.random.randn(300, 40).astype(np.float32), streaming_frames=50, repeats=1)
    assert out["frames"] == 300 and out["whole_utterance_rtf"] > 0 and out["streaming_batch1_rtf"] > 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("modeldir")
    lang, _, _ = build_tiny_graph(root)
    dec = decode.read_hclg_decoder(root / "graph", lang.trans_model, decode.SearchConfig(beam=13.0))
    return lang, dec


def _best_path(lang, dec, words, frames_per_state):
    lp = posteriorgram(lang, words, frames_per_state=frames_per_state, seed=1)
    prior = decode.log_priors_from_counts(np.ones(lang.trans_model.num_pdfs))
    scores = decode.hybrid_scores(lp, prior, dec.tid_pdf, 1.0)
    ok, ali, word_ids = dec.best_path("u", khg.DecodableCtc(scores))
    assert ok
    return [dec.word_symbols[i] for i in word_ids], ali


def test_words_get_the_times_of_their_phones_on_the_best_path(tiny) -> None:
    lang, dec = tiny
    words, ali = _best_path(lang, dec, ["YES", "MAYBE"], frames_per_state=4)
    assert words == ["YES", "MAYBE"]
    segs = modeldir.phone_segments(ali, lang.trans_model)
    names = {i: p for p, i in lang.phones.items()}
    assert [names[p] for p, _, _ in segs] == ["SIL", "Y", "EH", "S", "M", "EY", "B", "IY", "SIL"]
    prons = {w: [p] for w, p in LEXICON.items()}
    timed = modeldir.word_times(words, segs, names, prons, shift=0.01)
    yes_start, maybe_end = segs[1][1], segs[7][2]
    assert timed[0] == modeldir.Word("YES", round(yes_start * 0.01, 3), round(segs[3][2] * 0.01, 3))
    assert timed[1] == modeldir.Word("MAYBE", round(segs[4][1] * 0.01, 3), round(maybe_end * 0.01, 3))
    assert timed[0].end <= timed[1].start


def test_a_word_that_does_not_match_gets_no_times_rather_than_wrong_ones(tiny) -> None:
    lang, dec = tiny
    words, ali = _best_path(lang, dec, ["YES", "MAYBE"], frames_per_state=4)
    segs = modeldir.phone_segments(ali, lang.trans_model)
    names = {i: p for p, i in lang.phones.items()}
    prons = {"YES": [("Y", "EH", "Z")], "MAYBE": [LEXICON["MAYBE"]]}  # YES's phones are not on the path
    timed = modeldir.word_times(words, segs, names, prons, shift=0.01)
    assert [(w.word, w.start) for w in timed] == [("YES", None), ("MAYBE", None)]
