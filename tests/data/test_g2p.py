"""The G2P of data.oov_policy=g2p: espeak-ng mnemonics -> CMUdict ARPAbet, and espeak-ng batched."""

from __future__ import annotations

import pytest

from asr_kd.data import g2p as g2p_mod
from asr_kd.data.g2p import G2PError, espeak_input, espeak_to_arpabet, g2p, run_espeak, split_mnemonics
from asr_kd.data.lexicon import NONSILENCE_PHONES, cmudict_lexicon, read_lexicon_file

# espeak-ng 1.51 en-us output (espeak-ng -q -x -v en-us --sep=|) for CMUdict words, one per case
# the mapping handles: plain phones, stress marks, flap, glottal stop, syllabic l / n, r-coloured
# vowels, NEAR before r, the palatal marker, linking r.
MNEMONICS = {
    "HELLO": "h|@|l|'oU",
    "BUTTER": "b|'V|t#|3",
    "BUTTON": "b|'V|?|n-",
    "BOTTLE": "b|'0|t#|@L",
    "CARD": "k|'A@|d",
    "FORMER": "f|'o@|m|3",
    "LIRA": "l|'i@|r|@",
    "RODEO": "r|'oU|d|I2|;|,oU",
    "HARBORING": "h|'A@|b|3|r-|I|N",
    "JUDGE": "dZ|'V|dZ",
    "THOUGHT": "T|'O:|t",
    "CHOICE": "tS|'OI|s",
    "GENERATIONAL": "dZ|,E|n|3|r|'eI|S|@-|n|@L",
}


@pytest.mark.parametrize("word", sorted(MNEMONICS))
def test_mapping_gives_cmudict_pronunciation(word: str) -> None:
    pron = espeak_to_arpabet(split_mnemonics(MNEMONICS[word]))
    assert pron in cmudict_lexicon()[word], (word, pron, cmudict_lexicon()[word])


def test_split_mnemonics_drops_stress_and_joins_words() -> None:
    assert split_mnemonics("h|@|l|'oU") == ["h", "@", "l", "oU"]
    assert split_mnemonics("w|'E|l n|,oU|n\n") == ["w", "E", "l", "n", "oU", "n"]


def test_every_mapped_phone_is_one_of_cmudicts_39() -> None:
    produced = {p for pron in g2p_mod.PHONES.values() for p in pron}
    assert produced <= set(NONSILENCE_PHONES)
    assert set(NONSILENCE_PHONES) - produced == set()  # and every phone can be produced


def test_unknown_mnemonic_is_named() -> None:
    with pytest.raises(KeyError, match="Q9"):
        espeak_to_arpabet(["h", "Q9"])


def test_espeak_input_is_lower_case_plain_text() -> None:
    assert espeak_input("O'BRIEN") == "o'brien"
    assert espeak_input("CAFÉ") == "cafe"
    assert espeak_input("WELL-KNOWN") == "well known"
    assert espeak_input("--") == ""


def test_g2p_of_known_words_matches_cmudict() -> None:
    lex = cmudict_lexicon()
    words = ["HELLO", "WORLD", "BUTTER", "MOTHER", "CARD", "NEAR", "THOUGHT", "JUDGE", "CHOICE", "VISION",
             "SING", "YELLOW", "WATER", "HOUSE", "FIRE"]
    got = g2p(words)
    wrong = {w: got.get(w) for w in words if got.get(w) not in lex[w]}
    assert not wrong, wrong


def test_made_up_words_get_phones_of_the_inventory() -> None:
    got = g2p(["ZORBLAX", "QUENTARIS", "BLORPTON'S"])
    assert got["ZORBLAX"] == ("Z", "AO", "R", "B", "L", "AE", "K", "S")
    assert all(set(p) <= set(NONSILENCE_PHONES) and len(p) >= 5 for p in got.values())
    assert set(got) == {"ZORBLAX", "QUENTARIS", "BLORPTON'S"}


def test_one_batched_call_equals_one_call_per_word() -> None:
    words = ["ZORBLAX", "WELL-KNOWN", "O'CLOCK", "NASA", "A", "THE", "MCDONALD", "1984", "XYZ", "QUENTARIS",
             "RODEO", "CAFÉ"]
    batched = g2p(words, jobs=1)
    for w in words:
        assert g2p([w], jobs=1) == {w: batched[w]}, w
    assert batched["NASA"] == g2p(["nasa"])["nasa"]  # upper case is not spelled out as letters


def test_several_processes_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    words = [w for w in sorted(cmudict_lexicon()) if w.isalpha()][:300:7]
    one = g2p(words, jobs=1)
    monkeypatch.setattr(g2p_mod, "BATCH", 10)
    assert g2p(words, jobs=3) == one


def test_output_lines_that_do_not_match_the_words_are_redone_one_by_one() -> None:
    texts = ["hello. world", "cat"]  # the full stop makes two clauses: three lines for two texts
    lines = run_espeak(texts)
    assert len(lines) == 2
    assert espeak_to_arpabet(split_mnemonics(lines[1])) == ("K", "AE", "T")
    assert espeak_to_arpabet(split_mnemonics(lines[0]))[:4] == ("HH", "AH", "L", "OW")


def test_words_without_letters_get_no_pronunciation() -> None:
    assert g2p(["--", "ZORBLAX"]).keys() == {"ZORBLAX"}


def test_missing_espeak_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(g2p_mod.shutil, "which", lambda name: None)
    with pytest.raises(G2PError, match="espeak-ng.*apt-get install espeak-ng"):
        g2p(["ZORBLAX"])
    assert g2p([]) == {}  # nothing to pronounce: espeak-ng is not needed


def test_g2p_lexicon_file_is_a_valid_extra_lexicon(tmp_path) -> None:
    """What lang/lexicon_g2p.txt holds can be passed back as data.extra_lexicon."""
    from asr_kd.data.lang import pronounce_oov

    out = tmp_path / "lexicon_g2p.txt"
    generated, summary = pronounce_oov(out, ["ZORBLAX", "QUENTARIS", "--"], {"ZORBLAX", "--"})
    assert read_lexicon_file(out) == generated
    assert summary["g2p_words"] == 2 and summary["g2p_transcript_words"] == 1 and summary["g2p_lm_only_words"] == 1
    assert summary["g2p_failed_words"] == ["--"]
    assert out.read_text().startswith("# data.oov_policy=g2p")
