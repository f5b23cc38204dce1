"""Kaldi's final.mdl, binary and text: what load_model reads is the model written, in either form."""

from __future__ import annotations

import re
import shutil
import struct

import kaldi_hmm_gmm as khg
import numpy as np
import pytest

from asr_kd.align.kaldi_format import BINARY_HEADER, MdlFile, read_mdl, transition_model_bytes, write_mdl_binary
from asr_kd.align.kaldi_import import read_tid2pdf
from asr_kd.align.model import GmmHmm, init_monophone, load_model, save_model, save_model_binary, to_mdl
from asr_kd.data.lang import build_lexicon, write_lang
from asr_kd.errors import InputError
from tests.align.test_kaldi_import import kaldi_binary_transition_model

DIM = 5


def random_model(tmp_path, seed: int = 0) -> tuple[GmmHmm, str]:
    """A monophone GMM-HMM (3-state phones, 5-state SIL) with 1-3 random Gaussians per pdf and
    transition probabilities other than the topology's."""
    lex = {"CAT": [("K", "AE", "T")], "DOG": [("D", "AO", "G")], "A": [("AH",)]}
    lexicon, _ = build_lexicon(lex, lex, position_dependent=False)
    lang = write_lang(tmp_path / "lang", lexicon, 0.5, False)
    model = init_monophone(lang.topology(), np.zeros(DIM), np.ones(DIM))
    rng = np.random.default_rng(seed)
    am = khg.AmDiagGmm()
    for _ in range(model.num_pdfs):
        g = rng.integers(1, 4)
        gmm = khg.DiagGmm(nmix=int(g), dim=DIM)
        w = rng.random(g).astype(np.float32) + 0.1
        gmm.set_weights((w / w.sum()).astype(np.float32))
        gmm.set_invvars_and_means((rng.random((g, DIM)) + 0.5).astype(np.float32),
                                  rng.standard_normal((g, DIM)).astype(np.float32))
        gmm.compute_gconsts()
        am.add_pdf(gmm)
    state = list(model.trans_model.__getstate__())
    log_probs = np.log(rng.uniform(0.05, 0.95, len(state[6]))).astype(np.float32)
    log_probs[0] = 0.0
    state[6] = log_probs.astype(np.float64).tolist()
    tm = khg.TransitionModel.__new__(khg.TransitionModel)
    tm.__setstate__(tuple(state))
    return GmmHmm(ctx_dep=model.ctx_dep, trans_model=tm, am=am, topo=model.topo), lang.topo_text


def same_model(a: GmmHmm, b: GmmHmm) -> None:
    ma, mb = to_mdl(a), to_mdl(b)
    assert ma.tuples == mb.tuples and ma.topology_text() == mb.topology_text()
    np.testing.assert_array_equal(ma.log_probs, mb.log_probs)
    assert ma.dim == mb.dim and len(ma.gmms) == len(mb.gmms)
    for x, y in zip(ma.gmms, mb.gmms):
        for field in ("weights", "means_invvars", "inv_vars", "gconsts"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field), err_msg=field)
    np.testing.assert_array_equal(a.tid2pdf(), b.tid2pdf())


def test_binary_and_text_final_mdl_load_as_the_same_model(tmp_path):
    model, _ = random_model(tmp_path)
    text_dir, bin_dir = tmp_path / "text", tmp_path / "binary"
    save_model(model, text_dir / "final.mdl", text_dir / "tree")
    bin_dir.mkdir()
    save_model_binary(model, bin_dir / "final.mdl")
    shutil.copyfile(text_dir / "tree", bin_dir / "tree")
    assert (bin_dir / "final.mdl").read_bytes().startswith(BINARY_HEADER + b"<TransitionModel> <Topology> ")
    assert not (text_dir / "final.mdl").read_bytes().startswith(BINARY_HEADER)
    from_text, from_binary = load_model(text_dir), load_model(bin_dir)
    same_model(from_text, model)
    same_model(from_binary, model)
    assert read_mdl(bin_dir / "final.mdl").binary and not read_mdl(text_dir / "final.mdl").binary
    for d in (text_dir, bin_dir):
        np.testing.assert_array_equal(read_tid2pdf(d / "final.mdl"), model.tid2pdf())


def test_binary_model_rewrites_to_the_same_bytes(tmp_path):
    model, _ = random_model(tmp_path, seed=1)
    save_model_binary(model, tmp_path / "a.mdl")
    write_mdl_binary(read_mdl(tmp_path / "a.mdl"), tmp_path / "b.mdl")
    assert (tmp_path / "a.mdl").read_bytes() == (tmp_path / "b.mdl").read_bytes()


def test_transition_model_bytes_match_an_independent_encoding_of_kaldis_layout(tmp_path):
    model, topo_text = random_model(tmp_path)
    mdl = to_mdl(model)
    # the hand encoder of test_kaldi_import writes probability 0.5 on every arc and log-probs 0, -0.5, ...
    mdl.entries = [[(f, s, [(d, 0.5) for d, _ in t]) for f, s, t in states] for states in mdl.entries]
    mdl.log_probs = np.array([0.0] + [-0.5] * (len(mdl.log_probs) - 1), np.float32)
    expected = kaldi_binary_transition_model(topo_text, mdl.tuples)
    assert BINARY_HEADER + transition_model_bytes(mdl) == expected


def test_a_topology_with_separate_self_loop_pdfs_round_trips(tmp_path):
    """Kaldi's newer topology form (<ForwardPdfClass>/<SelfLoopPdfClass>, written with <Tuples>)."""
    topo_text = ("<Topology>\n<TopologyEntry>\n<ForPhones>\n1 2 3\n</ForPhones>\n"
                 "<State> 0 <ForwardPdfClass> 0 <SelfLoopPdfClass> 1 <Transition> 0 0.5 <Transition> 1 0.5 </State>\n"
                 "<State> 1 </State>\n</TopologyEntry>\n</Topology>\n")
    topo = khg.HmmTopology()
    topo.read(topo_text)
    model = init_monophone(topo, np.zeros(DIM), np.ones(DIM))
    mdl = to_mdl(model)
    assert not mdl.is_hmm
    write_mdl_binary(mdl, tmp_path / "final.mdl")
    blob = (tmp_path / "final.mdl").read_bytes()
    assert b"<Tuples> " in blob and b"<Triples> " not in blob
    assert struct.pack("<bi", 4, -1) in blob  # the marker of the extended topology format
    back = read_mdl(tmp_path / "final.mdl")
    assert back.tuples == mdl.tuples and any(t[2] != t[3] for t in back.tuples)  # forward pdf != self-loop pdf
    np.testing.assert_array_equal(back.tid2pdf(), model.tid2pdf())
    reread = khg.HmmTopology()
    reread.read(back.topology_text())
    assert str(reread) == str(topo)


def test_text_model_without_gconsts_reads(tmp_path):
    """Kaldi's DiagGmm::Read takes <GCONSTS> as optional and recomputes them; so do we."""
    model, _ = random_model(tmp_path, seed=2)
    save_model(model, tmp_path / "m" / "final.mdl", tmp_path / "m" / "tree")
    text = (tmp_path / "m" / "final.mdl").read_text()
    (tmp_path / "m" / "final.mdl").write_text(re.sub(r"<GCONSTS>\s*\[[^\]]*\]\s*", "", text))
    same_model(load_model(tmp_path / "m"), model)


def test_broken_files_are_named(tmp_path):
    model, _ = random_model(tmp_path)
    save_model_binary(model, tmp_path / "final.mdl")
    blob = (tmp_path / "final.mdl").read_bytes()
    (tmp_path / "cut.mdl").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError, match="cut.mdl"):
        read_mdl(tmp_path / "cut.mdl")
    (tmp_path / "other.mdl").write_text("<Nnet3> something else </Nnet3>\n")
    with pytest.raises(InputError, match="other.mdl.*TransitionModel"):
        read_mdl(tmp_path / "other.mdl")
    (tmp_path / "nnet.mdl").write_bytes(BINARY_HEADER + b"<Nnet3> ")
    with pytest.raises(InputError, match="expected <TransitionModel>"):
        read_mdl(tmp_path / "nnet.mdl")


def test_a_model_with_another_trees_tuples_is_refused(tmp_path):
    model, _ = random_model(tmp_path)
    save_model_binary(model, tmp_path / "final.mdl")
    other = MdlFile(**{**to_mdl(model).__dict__})
    other.tuples = other.tuples[:-1]
    write_mdl_binary(other, tmp_path / "bad" / "final.mdl")
    model.ctx_dep.write(True, str(tmp_path / "bad" / "tree"))
    with pytest.raises(ValueError, match="do not match the tree"):
        load_model(tmp_path / "bad")
