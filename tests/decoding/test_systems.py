"""Decoding the systems of a run: decode_dnn on a tiny graph with a fake acoustic model, the forked
search, which GMM systems are decoded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.graph_fixture import LEXICON, LM_TEXT, make_tiny_lang, posteriorgram

from asr_kd.config import load_config
from asr_kd.decoding import graph, lm, systems
from asr_kd.decoding import search as decode
from asr_kd.fileio import write_json
from asr_kd.paths import RunPaths


@pytest.fixture
def tiny_graph(tmp_path):
    """(lang, decoder) of the tiny YES/NO/MAYBE lexicon with a trigram LM."""
    lang = make_tiny_lang(tmp_path / "lang")
    (tmp_path / "text.txt").write_text("\n".join(LM_TEXT) + "\n")
    lm.build_arpa(tmp_path / "text.txt", tmp_path / "lm.arpa", order=3, vocab=set(LEXICON))
    inputs = graph.GraphInputs(lang.l_disambig, lang.disambig_phones, lang.words_txt, lang.trans_model, lang.tree)
    graph.make_graph(inputs, tmp_path / "lm.arpa", tmp_path / "graph", [lang.words_txt])
    dec = decode.read_hclg_decoder(tmp_path / "graph", lang.trans_model, decode.SearchConfig())
    return lang, dec


def test_decode_dnn_with_a_callable_posterior_source(tmp_path, tiny_graph) -> None:
    """The decode flow (tuning on dev, test WER, frame accuracy, files) with a fake acoustic model."""
    lang, dec = tiny_graph
    sentences = [["NO", "YES"], ["MAYBE", "YES"], ["NO", "MAYBE", "YES"]]

    def split(name: str) -> systems.EvalSplit:
        utts = [f"{name}-{i}" for i in range(len(sentences))]
        lps = {u: posteriorgram(lang, s, seed=i) for i, (u, s) in enumerate(zip(utts, sentences))}
        labels = {u: lp.argmax(axis=1) for u, lp in lps.items()}
        labels[utts[0]] = (labels[utts[0]] + 1) % lang.trans_model.num_pdfs  # one utterance all wrong
        # the "features" are the log-posteriors themselves; the posterior source is the identity
        return systems.EvalSplit(name, utts, lps, labels, dict(zip(utts, sentences)))

    paths = RunPaths(tmp_path / "exp")
    prior = decode.log_priors_from_counts(np.ones(lang.trans_model.num_pdfs))
    out = systems.decode_dnn("fake", lambda feats: feats, paths, dec, prior, split("dev"), split("test"),
                            scales=(0.5, 1.0), num_jobs=1, params=42)
    assert out["wer"] == 0.0 and out["dev"]["wer"] == 0.0
    n0 = len(posteriorgram(lang, sentences[0]))
    total = sum(len(posteriorgram(lang, s)) for s in sentences)
    assert out["frame_acc"] == pytest.approx((total - n0) / total)
    assert set(out["dev_wer_by_scale"]) == {"0.5", "1"}
    assert (paths.decode_dir("fake", "test") / "per_utt").exists()
    assert json.loads(paths.decode_summary("fake").read_text())["params"] == 42
    assert out["acoustic_scale_from"] == "dev"

    # a scale taken from another system: no dev search (no dev scoring), test decoded at that scale
    shared = systems.decode_dnn("fake2", lambda feats: feats, paths, dec, prior, split("dev"), split("test"),
                                scales=(0.5, 1.0), num_jobs=1, scale_from=("fake", 1.0))
    assert shared["acoustic_scale"] == 1.0 and shared["acoustic_scale_from"] == "fake"
    assert shared["dev_wer_by_scale"] == {} and shared["dev"] == {}
    assert shared["wer"] == 0.0 and shared["frame_acc"] == out["frame_acc"]
    assert shared["dev_frame_acc"] == out["dev_frame_acc"]
    assert not paths.decode_dir("fake2", "dev").exists() and (paths.decode_dir("fake2", "test") / "per_utt").exists()


def test_teachers_share_teacher_zeros_scale_only_when_asked() -> None:
    done = {"teacher-0": {"acoustic_scale": 0.11}}
    first = load_config(overrides={"decode.teacher_scale": "first"})
    each = load_config(overrides={"decode.teacher_scale": "each"})
    sys = lambda name: systems.DnnSystem(name, (), None)  # noqa: E731
    assert systems.shared_scale(first, sys("teacher-3"), done) == ("teacher-0", 0.11)
    assert systems.shared_scale(first, sys("teacher-0"), {}) is None  # teacher 0 chooses its own
    assert systems.shared_scale(first, sys("ensemble"), done) is None
    assert systems.shared_scale(each, sys("teacher-3"), done) is None


def test_parallel_search_matches_serial(tiny_graph) -> None:
    lang, dec = tiny_graph
    prior = decode.log_priors_from_counts(np.ones(lang.trans_model.num_pdfs))
    sents = [["YES"], ["MAYBE", "YES"], ["NO", "MAYBE"], ["NO", "YES"]] * 10
    items = [(f"u{i}", decode.hybrid_scores(posteriorgram(lang, s, peak=0.6, seed=i), prior, dec.tid_pdf, 1.0))
             for i, s in enumerate(sents)]
    serial = systems.search_all(dec, items, num_jobs=1)
    parallel = systems.search_all(dec, items, num_jobs=2)
    assert [h.words for h in parallel] == [h.words for h in serial]
    assert [h.utt for h in parallel] == [u for u, _ in items]


def test_gmm_systems_decode_the_monophone_only_when_asked_and_present(tmp_path) -> None:
    cfg, paths = load_config("smoke", {}), RunPaths(tmp_path / "exp")
    write_json(paths.marker("align"), {"summary": {"context": "triphone"}})
    assert [g.name for g in systems.gmm_systems(cfg, paths)] == ["gmm"]  # no align/mono/final.mdl yet
    (paths.mono_dir).mkdir(parents=True)
    (paths.mono_dir / "final.mdl").write_text("")
    found = systems.gmm_systems(cfg, paths)
    assert [(g.name, g.context, g.graph_dir) for g in found] == [
        ("gmm", "triphone", paths.graph), ("gmm_mono", "monophone", paths.graph / "mono")]
    off = load_config("smoke", {"decode.gmm_monophone": "false"})
    assert [g.name for g in systems.gmm_systems(off, paths)] == ["gmm"]


def test_a_gmm_on_other_features_than_ours_is_not_decoded() -> None:
    """An imported Kaldi model on LDA+MLLT features (40-dim) beside our MFCC + deltas (39-dim)."""
    feats = {"u1": np.zeros((7, 39), np.float32)}
    assert systems.gmm_feature_mismatch(39, feats) is None
    assert systems.gmm_feature_mismatch(40, feats) == (
        "its features are 40-dimensional, the recipe's MFCC + deltas 39-dimensional")
