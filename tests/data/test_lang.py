"""The lang stage: symbol tables, topology, disambiguation symbols and the lexicon FST."""

from __future__ import annotations

import json
import subprocess
import sys

import kaldi_hmm_gmm as khg
import kaldifst
import pytest

from asr_kd.data.vocab import decoding_vocabulary
from asr_kd.data.lang import add_disambig, build_lexicon, load_lang, mark_positions, prepare_lang, write_lang

LEXICON = {
    "CAT": [("K", "AE", "T")],
    "CATS": [("K", "AE", "T", "S")],
    "READ": [("R", "EH", "D"), ("R", "IY", "D")],
    "RED": [("R", "EH", "D")],
    "A": [("AH",), ("EY",)],
}


@pytest.fixture()
def lang(tmp_path):
    lexicon, missing = build_lexicon(LEXICON, LEXICON, position_dependent=False)
    assert missing == []
    return write_lang(tmp_path / "lang", lexicon, sil_prob=0.5, position_dependent=False)


def words_of(lang, phones: list[str]) -> list[str] | None:
    """The word sequence L.fst outputs for a phone sequence, or None if L rejects it."""
    acceptor = kaldifst.make_linear_acceptor([lang.phones[p] for p in phones])
    l_fst = lang.read_l_fst()
    kaldifst.arcsort(l_fst, sort_type="ilabel")
    composed = kaldifst.compose(acceptor, l_fst)
    if composed.num_states == 0:
        return None
    best = kaldifst.shortest_path(composed)
    ok, _, olabels, _ = kaldifst.get_linear_symbol_sequence(best)
    assert ok
    return [lang.word_symbols[w] for w in olabels]


def test_symbol_tables_follow_kaldi(lang):
    phones = (lang.dir / "phones.txt").read_text().split("\n")
    assert phones[0] == "<eps> 0" and phones[1] == "SIL 1"
    names = [line.split()[0] for line in phones if line]
    first_disambig = names.index("#0")
    assert all(n.startswith("#") for n in names[first_disambig:])
    assert not any(n.startswith("#") for n in names[:first_disambig])
    words = [line.split()[0] for line in (lang.dir / "words.txt").read_text().splitlines()]
    assert words[0] == "<eps>" and words[-3:] == ["#0", "<s>", "</s>"]
    assert words[1:-3] == sorted(LEXICON)
    assert lang.disambig_phones == tuple(lang.phones[n] for n in names[first_disambig:])
    assert lang.silence_phones == (1,)


def test_homophones_and_prefixes_get_disambiguation_symbols():
    lex = [("CAT", ("K", "AE", "T")), ("CATS", ("K", "AE", "T", "S")), ("READ", ("R", "EH", "D")),
           ("RED", ("R", "EH", "D")), ("DOG", ("D", "AO", "G"))]
    out, max_k = add_disambig(lex)
    assert dict((w, p) for w, p in out if w in ("CAT", "CATS", "DOG")) == {
        "CAT": ("K", "AE", "T", "#1"), "CATS": ("K", "AE", "T", "S"), "DOG": ("D", "AO", "G")}
    assert [p[-1] for w, p in out if w in ("READ", "RED")] == ["#1", "#2"]
    assert max_k == 2


def test_topology_has_three_states_per_phone_and_five_for_silence(lang):
    topo = lang.topology()
    classes = topo.get_phone_to_num_pdf_classes()
    assert classes[lang.sil_phone] == 5
    assert {classes[p] for p in lang.nonsilence_phones} == {3}
    ctx = khg.monophone_context_dependency(phones=topo.phones, phone2num_pdf_classes=classes)
    assert ctx.num_pdfs == 5 + 3 * len(lang.nonsilence_phones)


def test_lexicon_fst_accepts_words_with_optional_silence(lang):
    assert words_of(lang, ["K", "AE", "T"]) == ["CAT"]
    assert words_of(lang, ["SIL", "K", "AE", "T", "SIL"]) == ["CAT"]
    assert words_of(lang, ["K", "AE", "T", "SIL", "R", "EH", "D"]) in (["CAT", "READ"], ["CAT", "RED"])
    assert words_of(lang, ["K", "AE", "T", "S", "EY"]) == ["CATS", "A"]
    assert words_of(lang, ["R", "IY", "D", "SIL", "SIL"]) is None  # one silence between words at most
    assert words_of(lang, ["K", "AE"]) is None


def test_silence_probability_sets_the_costs(tmp_path):
    lexicon, _ = build_lexicon(["CAT"], LEXICON, position_dependent=False)
    lang = write_lang(tmp_path, lexicon, sil_prob=0.2, position_dependent=False)
    acceptor = kaldifst.make_linear_acceptor([lang.phones[p] for p in ["SIL", "K", "AE", "T"]])
    l_fst = lang.read_l_fst()
    kaldifst.arcsort(l_fst, sort_type="ilabel")
    ok, _, _, weight = kaldifst.get_linear_symbol_sequence(kaldifst.shortest_path(kaldifst.compose(acceptor, l_fst)))
    import math

    # silence at the start (p) and no silence at the end (1 - p)
    assert float(weight.value) == pytest.approx(-math.log(0.2) - math.log(0.8), rel=1e-5)


def test_position_dependent_phones(tmp_path):
    assert mark_positions(("K", "AE", "T")) == ("K_B", "AE_I", "T_E")
    assert mark_positions(("AH",)) == ("AH_S",)
    lexicon, _ = build_lexicon(LEXICON, LEXICON, position_dependent=True)
    lang = write_lang(tmp_path, lexicon, sil_prob=0.5, position_dependent=True)
    assert {"K_B", "K_I", "K_E", "K_S"} <= set(lang.phones)
    assert lang.lexicon["CAT"] == [("K_B", "AE_I", "T_E")]
    assert words_of(lang, ["SIL", "K_B", "AE_I", "T_E"]) == ["CAT"]
    assert load_lang(tmp_path).position_dependent


def one_utterance_and_lm(tmp_path, text: str, lm_text: str):
    """(manifest with one utterance saying ``text``, the decoding vocabulary of it and an LM text) under
    ``tmp_path``."""
    manifest = tmp_path / "m.jsonl"
    row = {"id": "u1", "speaker": "s", "chapter": "c", "audio": "x.flac", "text": text,
           "num_samples": 16000, "sample_rate": 16000}
    manifest.write_text(json.dumps(row) + "\n")
    lm = tmp_path / "lm.txt"
    lm.write_text(lm_text)
    return manifest, decoding_vocabulary([manifest], lm, None)[0]


def test_prepare_lang_names_missing_words_or_skips_them(tmp_path):
    manifest, lm = one_utterance_and_lm(tmp_path, "CAT ZZYZX", "RED CAT\nQWXZ\n")
    with pytest.raises(ValueError, match="ZZYZX"):
        prepare_lang(tmp_path / "lang", [manifest], lm, LEXICON, 0.5, False, "error")
    summary = prepare_lang(tmp_path / "lang", [manifest], lm, LEXICON, 0.5, False, "skip")
    assert summary["num_words"] == 2  # CAT, and RED from the LM text
    assert summary["words_without_pronunciation"] == 2 and summary["lm_only_words"] == 2
    assert summary["transcript_words_without_pronunciation"] == ["ZZYZX"]
    assert "g2p_words" not in summary and not (tmp_path / "lang" / "lexicon_g2p.txt").exists()


def test_prepare_lang_g2p_pronounces_transcript_and_lm_words(tmp_path):
    manifest, lm = one_utterance_and_lm(tmp_path, "CAT ZORBLAX", "RED CAT\nQUENTARIS ZORBLAX\n")
    summary = prepare_lang(tmp_path / "lang", [manifest], lm, LEXICON, 0.5, False, "g2p")
    assert summary["num_words"] == 4 and summary["words_without_pronunciation"] == 0
    assert (summary["g2p_words"], summary["g2p_transcript_words"], summary["g2p_lm_only_words"]) == (2, 1, 1)
    lang = load_lang(tmp_path / "lang")
    assert lang.lexicon["ZORBLAX"] == [("Z", "AO", "R", "B", "L", "AE", "K", "S")]
    assert words_of(lang, ["SIL", *lang.lexicon["ZORBLAX"][0]]) == ["ZORBLAX"]
    listed = (tmp_path / "lang" / "lexicon_g2p.txt").read_text().splitlines()
    assert listed[1:] == [f"{w} {' '.join(lang.lexicon[w][0])}" for w in ("QUENTARIS", "ZORBLAX")]
    summary = prepare_lang(tmp_path / "lang", [manifest], lm, {**LEXICON, "ZORBLAX": [("Z", "AO")]}, 0.5,
                           False, "g2p")
    assert summary["g2p_words"] == 1  # a lexicon pronunciation wins over the G2P
    assert load_lang(tmp_path / "lang").lexicon["ZORBLAX"] == [("Z", "AO")]


def test_modules_import_without_deadlock():
    """kaldilm imported after the Kaldi wheels must not hang the interpreter (import-order guard)."""
    code = "import asr_kd.data.lang, asr_kd.align, asr_kd.align.kaldi_import, kaldilm; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
