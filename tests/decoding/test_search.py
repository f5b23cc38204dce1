"""Hybrid decoding: a synthetic posteriorgram through a tiny HCLG decodes to the expected words."""

from __future__ import annotations

import numpy as np
import pytest

from tests.graph_fixture import LEXICON, build_tiny_graph, posteriorgram

from asr_kd.decoding import search as decode


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    lang, _, _ = build_tiny_graph(root)
    dec = decode.read_hclg_decoder(root / "graph", lang.trans_model, decode.SearchConfig(beam=13.0))
    n = lang.trans_model.num_pdfs
    prior = decode.log_priors_from_counts(np.ones(n))
    return lang, dec, prior


@pytest.mark.parametrize("words", [["YES", "NO", "MAYBE"], ["MAYBE", "YES"], ["NO"], ["NO", "MAYBE", "YES"]])
def test_posteriorgram_decodes_to_expected_words(setup, words) -> None:
    lang, dec, prior = setup
    (hyp,) = decode.decode_posteriors(dec, [("utt1", posteriorgram(lang, words, seed=len(words)))], prior, 1.0)
    assert hyp.ok
    assert hyp.words == words
    assert hyp.num_frames == 3 * (5 + 3 * sum(len(LEXICON[w]) for w in words) + 5)  # SIL, 3-state phones, SIL


def test_both_of_kaldis_decoders_find_the_same_words(setup) -> None:
    """decode.decoder: the best-path decoder (the default) and the lattice decoder read the same words,
    also from an utterance cut short; a search that reaches no final state (a frame or two: no HMM
    is through) is not ok and returns the best partial path."""
    lang, default, prior = setup
    decs = {d: decode.Decoder(default.hclg, lang.trans_model, default.word_symbols, decode.SearchConfig(beam=13.0, decoder=d))
            for d in decode.DECODERS}
    words = ["MAYBE", "NO", "YES"]
    post = posteriorgram(lang, words, seed=3)
    for cut in [len(post), *range(1, len(post), 9)]:
        hyps = {d: decode.decode_posteriors(dec, [("u", post[:cut])], prior, 1.0)[0] for d, dec in decs.items()}
        assert hyps["faster"].words == hyps["lattice"].words, cut
        assert hyps["faster"].num_frames == cut
    (full,) = decode.decode_posteriors(decs["faster"], [("u", post)], prior, 1.0)
    assert full.ok and full.words == words
    (short,) = decode.decode_posteriors(decs["faster"], [("u", post[:2])], prior, 1.0)
    assert not short.ok and short.words == []
    assert decode.SearchConfig().decoder == "faster"
    with pytest.raises(ValueError, match="unknown decoder"):
        decode.SearchConfig(decoder="viterbi")


def test_language_model_picks_between_homophones(setup) -> None:
    # NO and KNOW share phones N OW; the LM text has NO far more often.
    lang, dec, prior = setup
    (hyp,) = decode.decode_posteriors(dec, [("u", posteriorgram(lang, ["KNOW"]))], prior, 1.0)
    assert hyp.words == ["NO"]


def test_hybrid_scores_columns_follow_transition_ids(setup) -> None:
    lang, _, _ = setup
    tm = lang.trans_model
    n = tm.num_pdfs
    rng = np.random.default_rng(0)
    log_post = np.log(rng.dirichlet(np.ones(n), size=4)).astype(np.float32)  # (4, N)
    prior = decode.log_priors_from_counts(rng.integers(1, 100, size=n))
    tid_pdf = decode.tid_to_pdf(tm)
    scores = decode.hybrid_scores(log_post, prior, tid_pdf, acoustic_scale=0.5)
    assert scores.shape == (4, tm.num_transition_ids)
    for j in (0, 7, tm.num_transition_ids - 1):
        pdf = tm.transition_id_to_pdf(j + 1)
        np.testing.assert_allclose(scores[:, j], 0.5 * (log_post[:, pdf] - prior[pdf]), rtol=1e-6)
    with pytest.raises(ValueError, match="state priors"):
        decode.hybrid_scores(log_post[:, :-1], prior, tid_pdf, 1.0)


def test_priors_from_alignment_counts() -> None:
    counts = decode.count_pdfs([np.array([0, 0, 1]), np.array([2, 0])], num_pdfs=4)
    assert counts.tolist() == [3, 1, 1, 0]
    prior = decode.log_priors_from_counts(counts)
    assert np.exp(prior[:3]).sum() == pytest.approx(1.0, abs=1e-6)
    assert prior[1] < prior[0]
    assert prior[3] == decode.UNSEEN_LOG_PRIOR  # never seen in training: ruled out in the search
    scores = decode.hybrid_scores(np.log(np.full((1, 4), 0.25, np.float32)), prior, np.array([0, 3]), 0.1)
    assert scores[0, 1] < -1e8 < scores[0, 0]
    with pytest.raises(ValueError, match="out of range"):
        decode.count_pdfs([np.array([5])], num_pdfs=4)
