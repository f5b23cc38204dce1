"""Tied-triphone training on the tiny espeak corpus: tree from monophone alignments, convert-ali, passes."""

from __future__ import annotations

import numpy as np
import pytest

from asr_kd.align import tree as T
from asr_kd.align.feats import gmm_features
from asr_kd.align.model import init_monophone, load_model, save_model
from asr_kd.align.triphone import convert_alignments, train_triphone
from asr_kd.align.viterbi import TrainOptions, compile_graphs, realign, train
from asr_kd.data.lang import load_lang


@pytest.fixture(scope="module")
def mono_system(tiny_corpus) -> dict:
    lang = load_lang(tiny_corpus.lang_dir)
    feats = gmm_features(tiny_corpus.mfcc, tiny_corpus.utt2spk)
    frames = np.concatenate(list(feats.values()))
    mono = init_monophone(lang.topology(), frames.mean(0), frames.var(0))
    transcripts = {u: lang.word_ids(w) for u, w in tiny_corpus.text.items()}
    lex = lang.read_l_fst()
    graphs, _ = compile_graphs(mono, lex, [], transcripts)
    opts = TrainOptions(num_iters=12, total_gaussians=200, num_jobs=1, progress=False)
    train(mono, graphs, feats, opts, list(lang.silence_phones))
    final = realign(mono, graphs, feats, opts, lang.silence_phones)
    return {"lang": lang, "feats": feats, "mono": mono, "transcripts": transcripts, "lex": lex, "final": final}


@pytest.fixture(scope="module")
def tri(mono_system: dict):
    s, lang = mono_system, mono_system["lang"]
    opts = TrainOptions(num_iters=8, total_gaussians=300, num_jobs=1, progress=False)
    return train_triphone(
        s["mono"], s["feats"], s["final"].alignments, s["transcripts"], s["lex"], [], lang.phone_symbols,
        lang.silence_phones, lang.nonsilence_phones, num_leaves=150, opts=opts, min_count=20,
    )


def test_convert_alignments_keeps_the_state_path(mono_system: dict, tri) -> None:
    mono, model, tree = mono_system["mono"], tri.model, tri.tree
    alis = mono_system["final"].alignments
    converted, failed = convert_alignments(mono, model, tree, alis)
    assert not failed and set(converted) == set(alis)
    old_t, new_t = T.transition_table(mono.trans_model), T.transition_table(model.trans_model)
    tid2pdf = model.tid2pdf()
    for utt, ali in alis.items():
        new = converted[utt]
        for field in ("phone", "pdf_class", "hmm_state", "trans_index", "is_final"):
            np.testing.assert_array_equal(getattr(old_t, field)[ali], getattr(new_t, field)[new])
        left, centre, right, _ = T.phone_contexts(ali, old_t)
        expected = tree.compute_many(np.stack([left, centre, right, old_t.pdf_class[ali]], 1))
        np.testing.assert_array_equal(tid2pdf[new], expected)


def test_triphone_likelihood_beats_monophone(mono_system: dict, tri) -> None:
    mono, summary = mono_system["mono"], tri.summary
    assert summary["context"] == "triphone"
    assert mono.num_pdfs < summary["num_pdfs"] <= 150
    assert summary["convert_failed"] == summary["graph_failed"] == 0
    lls = summary["tri_loglike_per_frame"]
    assert lls[-1] > lls[1]  # passes after the first realignment improve the likelihood
    graphs, _ = compile_graphs(tri.model, mono_system["lex"], [], mono_system["transcripts"])
    opts = TrainOptions(num_jobs=1, progress=False)
    final = realign(tri.model, graphs, mono_system["feats"], opts, mono_system["lang"].silence_phones)
    assert len(final.alignments) >= 0.95 * len(graphs)
    mono_ll = mono_system["final"].loglike / mono_system["final"].frames
    assert final.loglike / final.frames > mono_ll


def test_triphone_model_saves_and_loads(tri, tmp_path) -> None:
    save_model(tri.model, tmp_path / "final.mdl", tmp_path / "tree")
    T.write_tree(tmp_path / "tree.ours", tri.tree)
    assert (tmp_path / "tree").read_bytes() == (tmp_path / "tree.ours").read_bytes()
    loaded = load_model(tmp_path)
    assert loaded.ctx_dep.context_width == 3 and loaded.num_pdfs == tri.model.num_pdfs
    assert T.read_tree(tmp_path / "tree").root == tri.tree.root
