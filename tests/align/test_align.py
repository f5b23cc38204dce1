"""The built-in GMM-HMM aligner on a tiny espeak-ng corpus: flat start, training, alignment, files."""

from __future__ import annotations

import dataclasses
import kaldi_hmm_gmm as khg
import numpy as np
import pytest
import torch
import torchaudio

from asr_kd.align import feats as gf
from asr_kd.align import viterbi as tr
from asr_kd.align.model import init_monophone, load_model, save_model
from asr_kd.data.lang import load_lang

OPTS = tr.TrainOptions(num_iters=8, total_gaussians=200, progress=False)


@pytest.fixture(scope="module")
def setup(tiny_corpus):
    lang = load_lang(tiny_corpus.lang_dir)
    feats = gf.gmm_features(tiny_corpus.mfcc, tiny_corpus.utt2spk)
    frames = np.concatenate(list(feats.values()))
    model = init_monophone(lang.topology(), frames.mean(0), frames.var(0))
    texts = {u: lang.word_ids(w) for u, w in tiny_corpus.text.items()}
    graphs, failed = tr.compile_graphs(model, lang.read_l_fst(), lang.disambig_phones, texts)
    assert failed == {}
    return lang, feats, model, graphs


@pytest.fixture(scope="module")
def trained(setup):
    lang, feats, _, graphs = setup
    frames = np.concatenate(list(feats.values()))
    model = init_monophone(lang.topology(), frames.mean(0), frames.var(0))  # trained in place below
    hist = tr.train(model, graphs, feats, OPTS, lang.silence_phones)
    return model, hist


def test_deltas_match_torchaudio():
    x = np.random.default_rng(0).standard_normal((50, 13)).astype(np.float32)
    ours = gf.deltas(x)  # (T, D)
    ref = torchaudio.functional.compute_deltas(torch.from_numpy(x.T[None]), win_length=5)[0].T.numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert gf.add_deltas(x).shape == (50, 39)


def test_speaker_mean_normalisation_zeroes_each_speakers_mean(tiny_corpus):
    feats = gf.gmm_features(tiny_corpus.mfcc, tiny_corpus.utt2spk)
    for spk in set(tiny_corpus.utt2spk.values()):
        static = np.concatenate([f[:, :13] for u, f in feats.items() if tiny_corpus.utt2spk[u] == spk])
        np.testing.assert_allclose(static.mean(0), 0.0, atol=1e-3)


def test_equal_alignment_has_one_label_per_frame(setup):
    _, feats, _, graphs = setup
    res = tr.equal_alignments(graphs, {u: f.shape[0] for u, f in feats.items()})
    assert res.failed == {}
    for utt, ali in res.alignments.items():
        assert ali.shape == (feats[utt].shape[0],)


def test_too_short_utterance_fails_equal_alignment_by_name(setup):
    _, _, _, graphs = setup
    utt = sorted(graphs)[0]
    res = tr.equal_alignments({utt: graphs[utt]}, {utt: 3})
    assert list(res.failed) == [utt]


def test_numpy_statistics_equal_kaldis_per_frame_accumulation(setup):
    lang, feats, model, graphs = setup
    res = tr.equal_alignments(graphs, {u: f.shape[0] for u, f in feats.items()})
    utt = sorted(res.alignments)[0]
    ali = res.alignments[utt]
    stats = tr.accumulate(model, {utt: feats[utt]}, {utt: ali}, progress=False)
    tm = model.trans_model
    kaldi_trans = tm.init_stats()
    loglike = 0.0
    for t, tid in enumerate(ali):
        kaldi_trans = tm.accumulate(prob=1.0, trans_id=int(tid), stats=kaldi_trans)  # returns a copy
        loglike += model.am.log_likelihood(tm.transition_id_to_pdf(int(tid)), feats[utt][t])
    np.testing.assert_allclose(stats.trans, np.asarray(kaldi_trans).ravel())
    assert stats.loglike == pytest.approx(loglike, rel=1e-5)
    assert stats.frames == len(ali)
    assert sum(o.sum() for o in stats.occ) == pytest.approx(len(ali))


def test_parallel_accumulation_equals_serial(setup, monkeypatch):
    _, feats, model, graphs = setup
    monkeypatch.setattr(tr, "MIN_UTTS_PER_JOB", 1)  # the tiny corpus alone would run serially
    res = tr.equal_alignments(graphs, {u: f.shape[0] for u, f in feats.items()})
    one = tr.accumulate(model, feats, res.alignments, num_jobs=1, progress=False)
    two = tr.accumulate(model, feats, res.alignments, num_jobs=2, progress=False)
    assert one.loglike == pytest.approx(two.loglike)
    np.testing.assert_allclose(one.trans, two.trans)
    for a, b in zip(one.x2, two.x2):
        np.testing.assert_allclose(a, b, rtol=1e-9)


def test_parallel_alignment_equals_serial(setup, trained, monkeypatch):
    lang, feats, _, graphs = setup
    model, _ = trained
    monkeypatch.setattr(tr, "MIN_UTTS_PER_JOB", 1)
    one = tr.realign(model, graphs, feats, OPTS, lang.silence_phones)
    two = tr.realign(model, graphs, feats, dataclasses.replace(OPTS, num_jobs=2), lang.silence_phones)
    assert sorted(one.alignments) == sorted(two.alignments)
    for u in one.alignments:
        np.testing.assert_array_equal(one.alignments[u], two.alignments[u])


def test_training_raises_loglike_and_aligns_every_utterance(setup, trained):
    _, feats, _, _ = setup
    model, hist = trained
    ll = hist.loglike_per_frame
    assert len(ll) == OPTS.num_iters
    shown = " ".join(f"{x:.2f}" for x in ll)
    assert ll[-1] > ll[0] + 20.0, shown  # nats per frame, from a flat start
    # Viterbi training with mixing up on a tiny corpus is not strictly monotone, but close to it:
    assert all(b > a - 3.0 for a, b in zip(ll, ll[1:])), shown
    assert ll[-1] >= max(ll) - 1.0, shown
    assert hist.failed == {}
    assert model.num_gauss > model.num_pdfs
    for utt, ali in hist.alignments.items():
        assert ali.shape == (feats[utt].shape[0],)


def test_final_alignment_spells_the_transcript(setup, trained, tiny_corpus):
    lang, feats, _, graphs = setup
    model, _ = trained
    final = dataclasses.replace(OPTS, last_resort_beam=500.0)  # as the stage's final alignment
    res = tr.realign(model, graphs, feats, final, lang.silence_phones)
    assert res.failed == {}, res.failed
    assert len(res.alignments) == len(graphs)
    tid2phone, tid2pdf = model.tid2phone(), model.tid2pdf()
    names = lang.phone_symbols
    sil_frames = 0
    for utt, ali in res.alignments.items():
        assert ali.shape == (feats[utt].shape[0],)
        assert ((tid2pdf[ali] >= 0) & (tid2pdf[ali] < model.num_pdfs)).all()
        phones = phone_sequence(model, ali, names)
        sil_frames += int((tid2phone[ali] == lang.sil_phone).sum())
        # the aligned phones, silence removed, spell the transcript with the lexicon's pronunciations
        assert spells(tuple(p for p in phones if p != "SIL"), tiny_corpus.text[utt], lang.lexicon), (utt, phones)
    total = sum(len(a) for a in res.alignments.values())
    assert 0.02 < sil_frames / total < 0.6


def phone_sequence(model, ali: np.ndarray, names: dict[int, str]) -> list[str]:
    """Phone instances of an alignment: a new one where the phone changes or its HMM state goes back."""
    tm = model.trans_model
    tuples = [t.__getstate__() for t in tm.tuples]  # (phone, hmm_state, forward_pdf, self_loop_pdf)
    id2state = tm.id2state
    out, prev = [], None
    for tid in ali:
        phone, state = tuples[id2state[int(tid)] - 1][:2]
        if prev is None or phone != prev[0] or state < prev[1]:
            out.append(names[phone])
        prev = (phone, state)
    return out


def spells(phones: tuple[str, ...], words: list[str], lexicon: dict) -> bool:
    if not words:
        return not phones
    return any(phones[: len(p)] == p and spells(phones[len(p) :], words[1:], lexicon) for p in lexicon[words[0]])


def test_model_files_round_trip(tmp_path, setup, trained):
    lang, feats, _, graphs = setup
    model, _ = trained
    save_model(model, tmp_path / "final.mdl", tmp_path / "tree")
    assert (tmp_path / "final.mdl").read_text().startswith("<TransitionModel>")
    loaded = load_model(tmp_path)
    assert loaded.num_pdfs == model.num_pdfs and loaded.num_gauss == model.num_gauss
    np.testing.assert_allclose(loaded.trans_model.log_probs, model.trans_model.log_probs, rtol=1e-6)
    x = next(iter(feats.values()))[10]
    for pdf in range(0, model.num_pdfs, 7):
        assert loaded.am.log_likelihood(pdf, x) == pytest.approx(model.am.log_likelihood(pdf, x), rel=1e-4)
    utts = sorted(graphs)[:3]
    a = tr.realign(model, graphs, feats, OPTS, lang.silence_phones, utts=utts)
    b = tr.realign(loaded, graphs, feats, OPTS, lang.silence_phones, utts=utts)
    for u in utts:
        np.testing.assert_array_equal(a.alignments[u], b.alignments[u])


def test_boost_silence_scales_only_silence_pdfs(setup, trained):
    from asr_kd.align.model import boosted_am, silence_pdfs

    lang, feats, _, _ = setup
    model, _ = trained
    boosted = boosted_am(model, list(lang.silence_phones), 2.0)
    sil = set(silence_pdfs(model, list(lang.silence_phones)))
    assert len(sil) == 5
    for pdf in range(model.num_pdfs):
        ratio = np.asarray(boosted.get_pdf(pdf).weights) / np.asarray(model.am.get_pdf(pdf).weights)
        np.testing.assert_allclose(ratio, 2.0 if pdf in sil else 1.0, rtol=1e-6)


def test_realign_iterations_follow_kaldis_schedule():
    assert tr.realign_iterations(40) == {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38}
    assert khg.AlignConfig(beam=10.0, retry_beam=40.0).retry_beam == 40.0
