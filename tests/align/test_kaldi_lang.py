"""The lang an imported Kaldi model decodes with: Kaldi's own data/lang, or ours checked against (and
renumbered to) the phone ids of Kaldi's phones.txt, with an error naming what cannot be mapped."""

from __future__ import annotations

import kaldifst
import numpy as np
import pytest

from asr_kd.align.kaldi_format import read_mdl
from asr_kd.align.kaldi_lang import read_symbols, resolve_lang, transcript_coverage
from asr_kd.align.model import init_monophone, save_model_binary
from asr_kd.data.lang import build_lexicon, load_lang, make_topo, write_lang
from asr_kd.data.manifest import Utterance, write_manifest
from asr_kd.decoding.graph import GraphInputs, build_hclg, compile_g
from asr_kd.paths import RunPaths
from asr_kd.errors import InputError

LEX = {"CAT": [("K", "AE", "T")], "DOG": [("D", "AO", "G")], "A": [("AH",)], "TACK": [("T", "AE", "K")]}
TEXTS = ["CAT A DOG", "A TACK", "DOG CAT"]


@pytest.fixture()
def run(tmp_path) -> RunPaths:
    """A run dir with our lang/ for LEX and a train manifest of TEXTS."""
    paths = RunPaths(tmp_path / "exp")
    lexicon, _ = build_lexicon(LEX, LEX, position_dependent=False)
    write_lang(paths.lang, lexicon, 0.5, False)
    utts = [Utterance(f"u{i}", "s", "c", "/x.wav", t, 16000, 16000) for i, t in enumerate(TEXTS)]
    write_manifest(paths.manifest("train"), utts)
    return paths


def kaldi_exp(tmp_path, order: list[str], extra: tuple[str, ...] = ("SPN",)) -> tuple:
    """A Kaldi 'experiment': phones.txt in the given order (+ extra phones) and a monophone model over it."""
    symbols = ["<eps>", "SIL", *extra, *order]
    phones = {p: i for i, p in enumerate(symbols)}
    exp = tmp_path / "kaldi_exp"
    exp.mkdir()
    (exp / "phones.txt").write_text("".join(f"{p} {i}\n" for p, i in phones.items()) + f"#0 {len(phones)}\n")
    import kaldi_hmm_gmm as khg

    topo = khg.HmmTopology()
    topo.read(make_topo([phones[p] for p in [*extra, *order]], [phones["SIL"]]))
    model = init_monophone(topo, np.zeros(3), np.ones(3))
    save_model_binary(model, exp / "final.mdl")
    model.ctx_dep.write(True, str(exp / "tree"))
    return exp, read_mdl(exp / "final.mdl"), model, phones


def symbol_arcs(fst: kaldifst.StdVectorFst, phones: dict[int, str]) -> list[tuple]:
    return sorted((s, phones.get(a.ilabel, "<eps>") if a.ilabel else "<eps>", a.olabel, round(a.weight.value, 5),
                   a.nextstate) for s in kaldifst.StateIterator(fst) for a in kaldifst.ArcIterator(fst, s))


def test_our_lang_with_the_same_ids_is_used_as_it_is(tmp_path, run):
    ours = read_symbols(run.lang / "phones.txt")
    order = [p for p, _ in sorted(ours.items(), key=lambda kv: kv[1]) if p not in ("<eps>", "SIL") and "#" not in p]
    exp, mdl, _, _ = kaldi_exp(tmp_path, order, extra=())
    summary = resolve_lang(run.lang, run.align_lang, mdl, "", exp, exp / "final.mdl", run.manifest("train"))
    assert summary["dir"] == str(run.lang) and run.decode_lang == run.lang
    assert summary["transcript_oov_rate"] == 0.0 and summary["phones_checked_against"] == str(exp / "phones.txt")


def test_our_lang_is_renumbered_to_kaldis_phone_ids_and_decodes_alike(tmp_path, run):
    ours = load_lang(run.lang)
    order = sorted([p for p in ours.phones if p not in ("<eps>", "SIL") and "#" not in p], reverse=True)
    exp, mdl, kaldi_model, kaldi_ids = kaldi_exp(tmp_path, order)
    summary = resolve_lang(run.lang, run.align_lang, mdl, "", exp, exp / "final.mdl", run.manifest("train"))
    assert summary["dir"] == str(run.align_lang) and "renumbered" in summary["source"]
    mapped = load_lang(run.decode_lang)
    for p, i in mapped.phones.items():
        if not p.startswith("#"):
            assert i == kaldi_ids[p], p
    assert sorted(mapped.disambig_phones) == [mapped.phones[p] for p in sorted(mapped.phones) if p.startswith("#")]
    assert min(mapped.disambig_phones) > max(kaldi_ids.values())  # after every Kaldi phone, Kaldi's #0 too
    for disambig in (False, True):  # the same paths, spelled with the same phone symbols
        before = symbol_arcs(ours.read_l_fst(disambig), ours.phone_symbols)
        after = symbol_arcs(mapped.read_l_fst(disambig), mapped.phone_symbols)
        assert before == after
    # HCLG of Kaldi's model over the renumbered lexicon has the size of ours over our own ids
    arpa = tmp_path / "lm.arpa"
    arpa.write_text("\\data\\\nngram 1=6\n\n\\1-grams:\n-1.0 </s>\n-99 <s>\n-0.7 CAT\n-0.7 DOG\n-0.7 A\n-0.7 TACK\n\n"
                    "\\end\\\n")
    own = init_monophone(ours.topology(), np.zeros(3), np.ones(3))
    sizes = []
    for lang, model in ((ours, own), (mapped, kaldi_model)):
        inputs = GraphInputs(lang.read_l_fst(True), lang.disambig_phones, lang.words_txt_path, model.trans_model,
                             model.ctx_dep)
        _, info = build_hclg(inputs, compile_g(arpa, lang.words_txt_path))
        sizes.append(info["HCLG"])
    assert sizes[0] == sizes[1]


def test_a_phone_kaldi_lacks_is_named_with_the_remedy(tmp_path, run):
    exp, mdl, _, _ = kaldi_exp(tmp_path, ["AE", "AH", "AO", "D", "G", "K"])  # no T
    with pytest.raises(InputError, match=r"1 phone\(s\) of .*phones.txt are not in .*: T; .*align.kaldi_lang_dir"):
        resolve_lang(run.lang, run.align_lang, mdl, "", exp, exp / "final.mdl", run.manifest("train"))


def test_without_phones_txt_the_model_must_cover_our_phone_ids(tmp_path, run):
    exp, mdl, _, _ = kaldi_exp(tmp_path, ["AE", "AH"])  # 4 phones: ours has 8
    (exp / "phones.txt").unlink()
    with pytest.raises(InputError, match="have no HMM in .*final.mdl.*copy it there or set"):
        resolve_lang(run.lang, run.align_lang, mdl, "", exp, exp / "final.mdl", run.manifest("train"))


def write_kaldi_lang(tmp_path, run) -> tuple:
    """Kaldi's data/lang for a model over our ids: our lang files, an align_lexicon, no lexicon.txt."""
    ours = load_lang(run.lang)
    src = tmp_path / "data_lang"
    src.mkdir()
    for name in ("phones.txt", "words.txt", "L.fst", "L_disambig.fst", "phones/silence.csl",
                 "phones/nonsilence.csl", "phones/disambig.int"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes((run.lang / name).read_bytes())
    (src / "phones" / "align_lexicon.txt").write_text("CAT CAT K AE T\nDOG DOG D AO G\n")
    exp = tmp_path / "exp_dir"
    exp.mkdir()
    model = init_monophone(ours.topology(), np.zeros(3), np.ones(3))
    save_model_binary(model, exp / "final.mdl")
    (exp / "phones.txt").write_bytes((run.lang / "phones.txt").read_bytes())
    return src, exp, read_mdl(exp / "final.mdl")


def test_kaldis_lang_dir_is_copied_checked_and_used(tmp_path, run):
    src, exp, mdl = write_kaldi_lang(tmp_path, run)
    summary = resolve_lang(run.lang, run.align_lang, mdl, str(src), exp, exp / "final.mdl", run.manifest("train"))
    assert summary["dir"] == str(run.align_lang) and run.decode_lang == run.align_lang
    lang = load_lang(run.align_lang)
    assert lang.lexicon == {"CAT": [("K", "AE", "T")], "DOG": [("D", "AO", "G")]}  # from align_lexicon.txt
    assert (run.align_lang / "L_disambig.fst").read_bytes() == (src / "L_disambig.fst").read_bytes()
    assert lang.topo_text == mdl.topology_text()  # the model's topology, whatever the lang dir had
    # Kaldi's phones.txt beside the model must agree with the lang's, as check_phones_compatible.sh
    (exp / "phones.txt").write_text((src / "phones.txt").read_text().replace("AE 2", "AE 99"))
    with pytest.raises(InputError, match="differ on 1 phone.*AE: 2 vs 99"):
        resolve_lang(run.lang, run.align_lang, mdl, str(src), exp, exp / "final.mdl", run.manifest("train"))
    (src / "L_disambig.fst").unlink()
    with pytest.raises(InputError, match="has no L_disambig.fst"):
        resolve_lang(run.lang, run.align_lang, mdl, str(src), exp, exp / "final.mdl", run.manifest("train"))


def test_an_experiment_dir_holding_its_lang_files_is_its_lang(tmp_path, run):
    src, exp, mdl = write_kaldi_lang(tmp_path, run)
    for name in ("words.txt", "L_disambig.fst"):
        (exp / name).write_bytes((src / name).read_bytes())
    summary = resolve_lang(run.lang, run.align_lang, mdl, "", exp, exp / "final.mdl", run.manifest("train"))
    assert summary["source"] == f"Kaldi lang {exp}" and summary["dir"] == str(run.align_lang)
    assert (run.align_lang / "L_disambig.fst").read_bytes() == (src / "L_disambig.fst").read_bytes()


def test_a_words_txt_sharing_no_transcript_word_is_refused(tmp_path, run):
    words = tmp_path / "words.txt"
    words.write_text("<eps> 0\ncat 1\ndog 2\n")
    with pytest.raises(InputError, match="none of the 7 words .* is in .*words.txt.*case"):
        transcript_coverage(words, run.manifest("train"))
    words.write_text("<eps> 0\nCAT 1\nDOG 2\nA 3\n")
    cov = transcript_coverage(words, run.manifest("train"))
    assert cov["transcript_words"] == 7 and cov["transcript_oov_rate"] == pytest.approx(1 / 7)
    assert cov["transcript_oov_examples"] == ["TACK"]
