"""Pronunciations for words CMUdict lacks, from espeak-ng: offline, in CMUdict's 39 ARPAbet phones.

``data.oov_policy = "g2p"`` uses this module: the lang stage passes it the corpus and LM-text
words that have no pronunciation and writes what comes back into the lexicon (and lists it in
``lang/lexicon_g2p.txt``). The G2P is espeak-ng's English (``en-us``) letter-to-sound rules and
dictionary, the same program that speaks the synthetic corpus; nothing is downloaded.

espeak-ng is run once per batch of words, one word a line on stdin::

    espeak-ng -q -x -v en-us -l <longest line + 1> --sep=|

``-x`` prints espeak's phoneme mnemonics (lines like ``h|@|l|'oU`` for HELLO), ``--sep`` puts a
``|`` between phonemes and ``-l`` makes every input line its own clause, so output line *i*
belongs to word *i* (the line counts are checked; on a mismatch the batch's words are run one
by one). :func:`espeak_to_arpabet` maps the mnemonics to ARPAbet without stress, as
:mod:`asr_kd.data.lexicon` keeps CMUdict. The mapping was tuned on CMUdict words disjoint from
the 1,000 held-out words ``benchmarks/bench_g2p.py`` scores it on.

A word espeak-ng gives nothing for, or a phoneme the table does not know, leaves the word
without a pronunciation; the caller counts and names it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterable, Sequence

from asr_kd.parallel import worker_map
from asr_kd.progress import progress

log = logging.getLogger(__name__)

Pron = tuple[str, ...]

ESPEAK = "espeak-ng"
VOICE = "en-us"
INSTALL_HINT = "install espeak-ng (e.g. sudo apt-get install espeak-ng), or use --set data.oov_policy=skip"
BATCH = 5000  # words per espeak-ng call
_SEP = "|"
_STRESS = "',%="  # espeak's stress marks, written before a vowel

# espeak-ng en-us phoneme mnemonic (``espeak-ng -x``; espeak-ng's phsource/ph_english*) -> ARPAbet.
PHONES: dict[str, Pron] = {
    # consonants
    "p": ("P",), "b": ("B",), "t": ("T",), "d": ("D",), "k": ("K",), "g": ("G",),
    "f": ("F",), "v": ("V",), "T": ("TH",), "D": ("DH",), "s": ("S",), "z": ("Z",),
    "S": ("SH",), "Z": ("ZH",), "h": ("HH",), "tS": ("CH",), "dZ": ("JH",),
    "m": ("M",), "n": ("N",), "N": ("NG",), "l": ("L",), "l#": ("L",), "r": ("R",), "w": ("W",), "j": ("Y",),
    "t#": ("T",),  # flapped t (BUTTER); CMUdict writes T
    "t2": ("T",), "d#": ("D",), "?": ("T",),  # glottal stop, as in BUTTON: CMUdict T
    "x": ("K",),  # velar fricative (BACH): CMUdict K
    "@L": ("AH", "L"), "n-": ("AH", "N"), "m-": ("AH", "M"),  # syllabic consonants: CMUdict AH0 + C
    "r-": (),  # linking r after a rhotic vowel (3 r-): CMUdict has ER alone
    "_": (),  # a pause
    # vowels
    "@": ("AH",), "@2": ("AH",), "@5": ("AH",), "@-": ("AH",), "a#": ("AH",), "V": ("AH",),
    "3": ("ER",), "3:": ("ER",),
    "a": ("AE",), "aa": ("AE",), "E": ("EH",),
    "I": ("IH",), "I2": ("IH",), "I#": ("IH",),
    "i": ("IY",), "i:": ("IY",), "i::": ("IY",),
    "0": ("AA",), "A:": ("AA",), "O": ("AO",), "O:": ("AO",), "O2": ("AO",),
    "U": ("UH",), "u:": ("UW",), "oU": ("OW",), "o": ("OW",), "eI": ("EY",), "aI": ("AY",),
    "aU": ("AW",), "OI": ("OY",),
    "A~": ("AA",), "O~": ("AA", "N"),  # French nasal vowels: BLANC b|l|'A~|N|k, DENOUEMENT ...|m|'O~
    # r-coloured vowels (en-us is rhotic: CMUdict writes vowel + R)
    "A@": ("AA", "R"), "o@": ("AO", "R"), "O@": ("AO", "R"), "e@": ("EH", "R"), "U@": ("UH", "R"),
    "i@3": ("IH", "R"), "aI3": ("AY", "ER"), "aU@": ("AW", "ER"),
    "aI@": ("AY", "AH"),  # MESSIAH
    "i@": ("IY", "AH"),  # IDEA's ia; before r it is NEAR's vowel: see convert()
}
_PALATAL = ";"  # after i / I / I2 before a vowel (RODEO: d|I2|;|oU): the vowel is CMUdict's IY
_I_VOWELS = frozenset({"i", "I", "I2", "I#"})


class G2PError(RuntimeError):
    """espeak-ng is missing or failed; the message says what to install or run."""


def split_mnemonics(line: str) -> list[str]:
    """One ``espeak-ng -x --sep=|`` output line -> its phoneme mnemonics, stress marks removed
    (``"h|@|l|'oU"`` -> ``["h", "@", "l", "oU"]``; words of a multi-word line run together)."""
    return [tok.lstrip(_STRESS) for word in line.split() for tok in word.split(_SEP) if tok.lstrip(_STRESS)]


def espeak_to_arpabet(mnemonics: Sequence[str]) -> Pron:
    """espeak-ng en-us phoneme mnemonics -> ARPAbet phones without stress (CMUdict's 39).

    Raises ``KeyError`` naming a mnemonic that :data:`PHONES` does not map.
    """
    return tuple(p for _, phones in convert(mnemonics) for p in phones)


def convert(mnemonics: Sequence[str]) -> list[tuple[str, Pron]]:
    """Each mnemonic with the ARPAbet phones it gives in its context (see :func:`espeak_to_arpabet`)."""
    out: list[tuple[str, Pron]] = []
    last = ""  # the last phone given so far
    for i, m in enumerate(mnemonics):
        nxt = mnemonics[i + 1] if i + 1 < len(mnemonics) else ""
        if m == _PALATAL:
            phones: Pron = ()
        elif m in _I_VOWELS and nxt == _PALATAL:
            phones = ("IY",)
        elif m == "i@" and nxt == "r":
            phones = ("IH",)  # NEAR before r: CMUdict IH R
        elif m == "r" and last in ("R", "ER"):
            phones = ()  # an r after an r-coloured vowel (MARRING m|A@|r|I2|N): CMUdict has one R
        elif m not in PHONES:
            raise KeyError(f"espeak-ng phoneme {m!r} has no ARPAbet mapping")
        else:
            phones = PHONES[m]
        out.append((m, phones))
        last = phones[-1] if phones else last
    return out


def espeak_input(word: str) -> str:
    """What espeak-ng is given for a lexicon word: lower case (upper case is read as letters),
    accents dropped, anything but letters, digits and apostrophes a space."""
    plain = unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode("ascii").lower()
    return " ".join(re.sub(r"[^a-z0-9']+", " ", plain).split())


def check_espeak() -> str:
    """The espeak-ng executable, or a :class:`G2PError` that says what to install."""
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise G2PError(f"data.oov_policy=g2p needs {ESPEAK}, which is not on PATH; {INSTALL_HINT}")
    return exe


def run_espeak(texts: Sequence[str], exe: str = ESPEAK) -> list[str]:
    """espeak-ng's mnemonic line for each text (one word, or a few, without newlines), in order."""
    if not texts:
        return []
    cmd = [exe, "-q", "-x", "-v", VOICE, "-l", str(max(map(len, texts)) + 1), f"--sep={_SEP}"]
    try:
        res = subprocess.run(cmd, input="".join(t + "\n" for t in texts), capture_output=True, text=True,
                             env={**os.environ, "LC_ALL": "C.UTF-8"}, check=False)
    except FileNotFoundError:
        raise G2PError(f"{exe} not found; {INSTALL_HINT}") from None
    if res.returncode != 0:
        raise G2PError(f"{' '.join(cmd)} failed (exit {res.returncode}): {res.stderr.strip()[-500:]}")
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    if len(lines) == len(texts):
        return lines
    if len(texts) == 1:
        return [" ".join(lines)]
    log.warning("espeak-ng gave %d lines for %d words; running them one by one", len(lines), len(texts))
    return [run_espeak([t], exe)[0] for t in texts]


def _pronounce_batch(words: Sequence[str], exe: str) -> list[Pron | None]:
    texts = [espeak_input(w) for w in words]
    asked = [t for t in texts if t]
    lines = iter(run_espeak(asked, exe))
    prons: list[Pron | None] = []
    for text in texts:
        if not text:
            prons.append(None)
            continue
        try:
            prons.append(espeak_to_arpabet(split_mnemonics(next(lines))) or None)
        except KeyError as e:
            log.warning("G2P: no pronunciation for %r: %s", text, e.args[0])
            prons.append(None)
    return prons


def default_jobs() -> int:
    """espeak-ng processes at once: one per core, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(8, cores)


def g2p(words: Iterable[str], jobs: int = 0) -> dict[str, Pron]:
    """Pronunciations (ARPAbet, no stress) for ``words`` from espeak-ng en-us, ``jobs`` espeak-ng
    processes at a time (0: :func:`default_jobs`); a word left without one is missing from the result.

    Raises :class:`G2PError` when espeak-ng is not installed or fails.
    """
    todo = sorted(set(words))
    if not todo:
        return {}
    exe = check_espeak()
    jobs = jobs or default_jobs()
    size = min(BATCH, -(-len(todo) // jobs))  # every process gets work
    batches = [todo[i : i + size] for i in range(0, len(todo), size)]
    out: dict[str, Pron] = {}
    results = worker_map(lambda b: _pronounce_batch(b, exe), batches, jobs, start="thread")
    for batch, prons in zip(batches, progress(results, total=len(batches), desc="G2P", unit="batch", leave=False,
                                              disable=len(batches) == 1)):
        out.update((w, p) for w, p in zip(batch, prons) if p)
    log.info("G2P (espeak-ng %s): %d of %d words pronounced", VOICE, len(out), len(todo))
    return out
