"""Real English sentences for the synthetic corpus: Jane Austen's six novels, normalised as LibriSpeech.

``python -m data_prep.synthetic --text books`` (the recipe's ``data.synthetic_text = "books"``)
reads its utterances and LM text from here instead of :mod:`data_prep.synthetic_text`'s grammar.

**Source.** Debian's ``r-cran-janeaustenr`` (``apt-get install --no-install-recommends
r-cran-janeaustenr``): the full texts of *Sense and Sensibility*, *Pride and Prejudice*,
*Mansfield Park*, *Emma*, *Northanger Abbey* and *Persuasion* (1811-1818, public domain; the
package is MIT, ``/usr/share/doc/r-cran-janeaustenr/copyright``), Project Gutenberg-era fiction
of the kind LibriSpeech's audiobooks read (LibriVox recordings of these novels are in
LibriSpeech). Nothing is downloaded and R is never run: the novels are character vectors in R's
lazy-load database (``data/Rdata.rdx`` + ``Rdata.rdb``), which :func:`read_lazyload_db` reads
with a small reader of R's serialization format.

**Text.** A novel's lines are joined into paragraphs (blank-line separated); front matter before
its first chapter heading, editorial notes (``[...]``, footnotes ``*...``) and everything after
``THE END`` / ``FINIS`` / ``A NOTE ON THE TEXT`` are left out. Paragraphs are split into sentences
at ``.``, ``!`` or ``?`` before a capital (not after ``Mr.``, ``Mrs.``, an initial, ...), and
:func:`normalise` writes them as LibriSpeech's transcripts are written: upper case, letters and
apostrophes only, ``MR.`` as ``MISTER``, hyphens as spaces; a sentence with a number (digits, or
a Roman numeral) is dropped and counted (the novels have a few dozen: dates, sums, kings). An
*utterance* is a sentence of 5 to 35 words (LibriSpeech's utterances run to 35 s); a longer
sentence is cut at its ``;``, ``:`` and ``--`` into runs of clauses of at most 35 words.

**Split** (:func:`split_books`, seeded): whole chapters, drawn in a seeded order, go to test and
then dev until each holds :data:`HELD_OUT_UTTERANCES` utterances; every other chapter is the LM
text (every sentence of it, of any length) and the pool of training utterances. Dev and test
sentences are thus disjoint from the LM text and the training transcripts, and from each other,
by chapter, as LibriSpeech's LM corpus leaves out the books of its dev and test sets; their words
outside the LM text (names and rare words of the held-out chapters) are the task's OOVs, as in
LibriSpeech. The decoding vocabulary is the LM text's words (``asr_kd.data.vocab``; the training
transcripts come from the LM chapters, so they add none).

**The task** (``python -m data_prep.book_text``, seed 0; perplexity measured with asr_kd.decoding.lm): 245 LM chapters, 28,248
sentences, 655,000 words, a vocabulary of 13,544 words (1,959 words of the text are not in
CMUdict: ``data.oov_policy=g2p`` pronounces them all); 29,089 training, 1,613 dev and 1,543 test
utterances of 17 words on average; OOV rate 0.48 % (dev) and 0.85 % (test); trigram (Kneser-Ney)
perplexity 124 (dev) and 139 (test). The template grammar's: 774 words, perplexity 45.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import math
import random
import re
import struct
import sys
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.librispeech import CorpusError

PACKAGE = "r-cran-janeaustenr"
INSTALL_HINT = f"install it with: apt-get install --no-install-recommends {PACKAGE}"
# Where R packages are installed (Debian's r-cran-* packages: /usr/lib/R/site-library).
R_LIBRARIES = ("/usr/lib/R/site-library", "/usr/local/lib/R/site-library", "/usr/lib/R/library")
# The novels, in publication order (the names of the package's data sets).
NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
MIN_WORDS, MAX_WORDS = 5, 35  # an utterance's words
HELD_OUT_UTTERANCES = 1500  # utterances in each of the dev and test chapter pools (at least)
# Mean seconds of a book utterance as the synthetic voices read it (the tiny-wer corpus of seed 0:
# 18.1 / 17.4 / 16.9 words per train / dev / test utterance; the template's 8-word sentences take
# ~3.4 s): for the cost estimate of a corpus not generated yet (asr_kd.recipes.estimate).
SECONDS_PER_UTTERANCE = {"train": 6.19, "dev": 5.95, "test": 5.83}

# -- R's lazy-load database -----------------------------------------------------------------------
# R's serialization format (XDR, "X\n"; R Internals, "Serialization formats"): the types a data set
# of character vectors and lists uses.
_NILVALUE, _REF, _SYM, _LIST, _CHAR, _LGL, _INT, _REAL, _STR, _VEC = 254, 255, 1, 2, 9, 10, 13, 14, 16, 19
_PAIRLISTS = (_LIST, 6, 239, 240)  # LISTSXP, LANGSXP, ATTRLANGSXP, ATTRLISTSXP


@dataclass
class RVector:
    """An R vector with attributes (a pairlist of (tag, value)); plain vectors come back as lists."""

    values: list[Any]
    attributes: list[tuple[Any, Any]] = field(default_factory=list)

    def attr(self, name: str) -> Any:
        return next((v for tag, v in self.attributes if tag == name), None)


class _Unserializer:
    def __init__(self, data: bytes) -> None:
        if data[:2] != b"X\n":
            raise ValueError(f"not an R XDR serialization (starts {data[:2]!r})")
        self.data, self.pos, self.refs = data, 2, []
        version = self.int()
        self.int(), self.int()  # the writer's R version, the oldest reader's
        if version == 3:
            n = self.int()  # then the native encoding's name
            self.pos += n

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return v

    def length(self) -> int:
        n = self.int()
        return (self.int() << 32) + self.int() if n == -1 else n

    def item(self) -> Any:
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == _NILVALUE:
            return None
        if kind == _REF:
            return self.refs[(flags >> 8 or self.int()) - 1]
        if kind == _SYM:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == _CHAR:
            n = self.int()
            if n == -1:
                return None  # NA_character_
            s = self.data[self.pos : self.pos + n].decode("utf-8", errors="replace")
            self.pos += n
            return s
        if kind in _PAIRLISTS:
            if has_attr:
                self.item()  # a pairlist's own attributes: not kept
            tag = self.item() if has_tag else None
            head = (tag, self.item())
            rest = self.item()
            return [head, *(rest or [])]
        if kind in (_LGL, _INT, _REAL):
            n, fmt = self.length(), "d" if kind == _REAL else "i"
            values: list[Any] = list(struct.unpack_from(f">{n}{fmt}", self.data, self.pos))
            self.pos += n * struct.calcsize(fmt)
        elif kind in (_STR, _VEC, 20):
            values = [self.item() for _ in range(self.length())]
        else:
            raise ValueError(f"R serialization: type {kind} is not read here (a data set of vectors expected)")
        return RVector(values, self.item()) if has_attr else values


def unserialize(data: bytes) -> Any:
    """An R object from its XDR serialization: vectors as lists (or :class:`RVector` with their
    attributes), character NA as None, symbols as their names, pairlists as [(tag, value), ...]."""
    return _Unserializer(data).item()


def read_lazyload_db(base: str | Path) -> dict[str, Any]:
    """The objects of an R lazy-load database (``<base>.rdx`` index + ``<base>.rdb`` data), by name.

    Each object is zlib-compressed (R's default, ``compressed = 1``): a 4-byte big-endian length,
    then the deflate stream of its serialization.
    """
    base = Path(base)
    index = unserialize(gzip.decompress(base.with_suffix(".rdx").read_bytes()))
    variables = index.values[0]
    compressed = index.values[2]
    if compressed not in ([1], [True]):
        raise ValueError(f"{base}.rdx: compression {compressed} not read here (zlib expected)")
    data = base.with_suffix(".rdb").read_bytes()
    out = {}
    for name, (offset, size) in zip(variables.attr("names"), variables.values):
        chunk = data[int(offset) : int(offset) + int(size)]
        (expected,) = struct.unpack(">I", chunk[:4])
        raw = zlib.decompress(chunk[4:])
        if len(raw) != expected:
            raise ValueError(f"{base}.rdb: {name} is {len(raw)} bytes, the index says {expected}")
        out[name] = unserialize(raw)
    return out


def find_package(libraries: Sequence[str] = R_LIBRARIES) -> Path:
    """The installed janeaustenr package's directory; a :class:`CorpusError` saying what to install."""
    for lib in libraries:
        path = Path(lib) / "janeaustenr"
        if (path / "data" / "Rdata.rdx").exists():
            return path
    raise CorpusError(f"the books text (data.synthetic_text=books, --text books) needs Debian's {PACKAGE}, "
                      f"not found under {', '.join(libraries)}; {INSTALL_HINT}")


def load_novels(package: Path | None = None) -> dict[str, list[str]]:
    """Novel name (:data:`NOVELS`) -> its lines of text, as the package ships them."""
    package = package or find_package()
    objects = read_lazyload_db(package / "data" / "Rdata")
    missing = [n for n in NOVELS if n not in objects]
    if missing:
        raise CorpusError(f"{package}: the data sets {', '.join(missing)} are missing; reinstall {PACKAGE}")
    return {n: [line or "" for line in objects[n]] for n in NOVELS}


# -- paragraphs, chapters, sentences --------------------------------------------------------------
_CHAPTER = re.compile(r"^CHAPTER\s+([IVXLC]+|\d+)\.?$", re.IGNORECASE)
_END = re.compile(r"^(THE END|FINIS|A NOTE ON THE TEXT)\.?$", re.IGNORECASE)


def paragraphs(lines: Iterable[str]) -> list[str]:
    """Blank-line separated paragraphs, each on one line (whitespace collapsed)."""
    out, cur = [], []
    for line in [*lines, ""]:
        if line.strip():
            cur.append(line.strip())
        elif cur:
            out.append(" ".join(" ".join(cur).split()))
            cur = []
    return out


def chapters(lines: Iterable[str]) -> list[list[str]]:
    """A novel's chapters, each a list of paragraphs: from its first chapter heading to its end
    mark (``THE END``, ``FINIS``, an editor's note), editorial notes and footnotes left out."""
    out: list[list[str]] = []
    for para in paragraphs(lines):
        if _END.match(para):
            break
        if _CHAPTER.match(para):
            out.append([])
        elif out and not para.startswith(("[", "*")) and not re.match(r"^VOLUME\s+[IVX]+$", para, re.I):
            out[-1].append(para)
    return [c for c in out if c]


# Abbreviations before a full stop that ends no sentence, and how they are read.
ABBREVIATIONS = {"Mr": "mister", "Mrs": "missus", "Dr": "doctor", "St": "saint", "Esq": "esquire",
                 "Rev": "reverend", "Col": "colonel", "Capt": "captain", "Sept": "september"}
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+(?=[\"'(\[]*[A-Z])")


def split_sentences(paragraph: str) -> list[str]:
    """A paragraph's sentences: cut after ``.``, ``!`` or ``?`` (and closing quotes) before a
    capital, except after an abbreviation (:data:`ABBREVIATIONS`) or an initial (``Mr. E. Knightley``)."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(paragraph):
        before = paragraph[start : m.start()].rsplit(None, 1)
        last = before[-1].lstrip("\"'([_") if before else ""
        if paragraph[m.start()] == "." and (last in ABBREVIATIONS or re.fullmatch(r"[A-Z]", last)):
            continue
        out.append(paragraph[start : m.end()].strip())
        start = m.end()
    tail = paragraph[start:].strip()
    return [*out, tail] if tail else out


def clauses(sentence: str) -> list[str]:
    """A sentence cut at ``;``, ``:`` and dashes (``--``), the marks kept with the clause before."""
    return [c.strip() for c in re.split(r"(?<=[;:])\s+|(?<=--)|\s+-\s+", sentence) if c.strip()]


# -- normalisation --------------------------------------------------------------------------------
_ABBREV = re.compile(r"\b(" + "|".join(ABBREVIATIONS) + r")\.")


def normalise(text: str) -> str | None:
    """``text`` as LibriSpeech writes a transcript: upper case, words of letters and inner
    apostrophes (``DON'T``, ``O'CLOCK``), ``Mr.`` as ``MISTER``, ``&c.`` as ``ET CETERA``, hyphens
    and dashes as spaces, accents dropped, other marks removed. None when ``text`` has a number,
    digits or a Roman numeral (``CHARLES II``): LibriSpeech spells numbers out, and the novels have
    few, so their sentences are dropped."""
    s = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    if re.search(r"\d|\b[IVX]{2,}\b", s):
        return None
    s = _ABBREV.sub(lambda m: ABBREVIATIONS[m.group(1)], s)
    s = re.sub(r"&c\b\.?", " et cetera ", s).replace("&", " and ").replace("_", "")
    s = re.sub(r"[^A-Za-z']+", " ", s)  # hyphens, dashes, punctuation
    words = (w.strip("'") for w in s.split())  # quotes, and the apostrophe of a plural possessive
    return " ".join(w for w in words if w).upper()


def utterances(sentence: str) -> list[str]:
    """A sentence's utterance texts: itself normalised when it has :data:`MIN_WORDS` to
    :data:`MAX_WORDS` words; a longer one as runs of its clauses of at most MAX_WORDS words (each
    at least MIN_WORDS; a clause longer than that is dropped); none for a shorter one or one with a number."""
    whole = normalise(sentence)
    if whole is None:
        return []
    n = len(whole.split())
    if n <= MAX_WORDS:
        return [whole] if n >= MIN_WORDS else []
    out, run = [], []
    for clause in clauses(sentence):
        words = (normalise(clause) or "").split()
        if run and len(run) + len(words) > MAX_WORDS:
            out.append(run)
            run = []
        run = run + words
    out.append(run)
    return [" ".join(r) for r in out if MIN_WORDS <= len(r) <= MAX_WORDS]


# -- the split -------------------------------------------------------------------------------------
@dataclass
class Chapter:
    novel: str
    index: int  # 0-based, in the novel
    sentences: list[str]  # normalised, every length (the LM text's lines)
    utterances: list[str]  # normalised, MIN_WORDS..MAX_WORDS words

    @property
    def name(self) -> str:
        return f"{self.novel}-{self.index + 1:02d}"


@dataclass
class BookText:
    """The books text split for one seed: LM text, the utterance pools of each split, and counts."""

    lm: list[str]  # every sentence of the LM chapters, in book order
    train: list[str]  # utterance pools, unique, in a seeded order
    dev: list[str]
    test: list[str]
    chapters: dict[str, list[str]]  # split (lm, dev, test) -> chapter names
    stats: dict[str, Any]


def read_chapters(novels: dict[str, list[str]]) -> tuple[list[Chapter], dict[str, int]]:
    """Every chapter of the novels with its sentences and utterances, and counts of what was dropped."""
    out, dropped = [], Counter()
    for novel, lines in novels.items():
        for i, paras in enumerate(chapters(lines)):
            sents, utts = [], []
            for para in paras:
                for raw in split_sentences(para):
                    norm = normalise(raw)
                    if norm is None:
                        dropped["sentences_with_numbers"] += 1
                        continue
                    if not norm:
                        continue
                    sents.append(norm)
                    u = utterances(raw)
                    n = len(norm.split())
                    dropped["sentences_short"] += n < MIN_WORDS
                    dropped["sentences_long"] += n > MAX_WORDS
                    dropped["long_sentence_utterances"] += len(u) if n > MAX_WORDS else 0
                    utts.extend(u)
            out.append(Chapter(novel, i, sents, utts))
    return out, dict(dropped)


@functools.lru_cache(maxsize=1)
def _installed_chapters() -> tuple[list[Chapter], dict[str, int]]:
    return read_chapters(load_novels())


def _unique(seq: Iterable[str], exclude: set[str] = frozenset()) -> list[str]:
    seen = set(exclude)
    out = []
    for s in seq:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def split_books(seed: int, novels: dict[str, list[str]] | None = None,
                held_out: int = HELD_OUT_UTTERANCES) -> BookText:
    """The seeded chapter split (module docstring): test, then dev chapters until each pool has
    ``held_out`` utterances, the rest LM text and training pool. Utterance pools are unique and in a
    seeded order; a training utterance that is also a dev or test one (a short common sentence such
    as ``I DO NOT KNOW``) is left out of training, and such a dev one out of dev."""
    chs, dropped = read_chapters(novels) if novels is not None else _installed_chapters()
    order = list(range(len(chs)))
    random.Random(f"books-{seed}").shuffle(order)
    parts: dict[str, list[Chapter]] = {"test": [], "dev": [], "lm": []}
    for i in order:
        split = next((s for s in ("test", "dev") if sum(len(c.utterances) for c in parts[s]) < held_out), "lm")
        parts[split].append(chs[i])
    for p in parts.values():
        p.sort(key=lambda c: (NOVELS.index(c.novel), c.index))
    rng = random.Random(f"books-utterances-{seed}")
    pools: dict[str, list[str]] = {}
    taken: set[str] = set()
    for split in ("test", "dev", "lm"):
        pool = _unique((u for c in parts[split] for u in c.utterances), taken)
        taken |= set(pool)
        rng.shuffle(pool)
        pools[split] = pool
    lm = [s for c in parts["lm"] for s in c.sentences]
    stats = {"chapters": {s: len(p) for s, p in parts.items()}, "dropped": dropped,
             "lm_sentences": len(lm), "lm_words": sum(len(s.split()) for s in lm),
             "utterances": {"train": len(pools["lm"]), "dev": len(pools["dev"]), "test": len(pools["test"])}}
    return BookText(lm=lm, train=pools["lm"], dev=pools["dev"], test=pools["test"],
                    chapters={s: [c.name for c in p] for s, p in parts.items()}, stats=stats)


# -- the task's statistics --------------------------------------------------------------------------
def oov_rate(sentences: Iterable[str], vocab: set[str]) -> dict[str, Any]:
    """Tokens of ``sentences`` outside ``vocab`` (``asr_kd.data.vocab.oov_counts``)."""
    from asr_kd.data.vocab import oov_counts

    return oov_counts((s.split() for s in sentences), vocab, examples=10)


# The between-utterance spread of the tiny demo's test WER (RESULTS.md, the demo at 19c6b58: 150
# test utterances, 1,199 words): :func:`spread_from_interval` of the mean teacher's 3.7 % [2.6, 4.9]
# and of teacher 0's 3.0 % [1.9, 4.2].
MEASURED_SPREADS = {"mean_teacher": 0.70, "teacher0": 1.26}


def _error_variance(lengths: Sequence[int], wer: float, spread: float) -> tuple[float, float]:
    """(the variance of an utterance's errors about W L, mean words per utterance) for test utterances
    drawn from ``lengths``: binomial word errors, L W (1 - W), around an utterance error rate that
    varies between utterances with standard deviation ``spread`` x W, (spread W L)^2."""
    m1 = sum(lengths) / len(lengths)
    m2 = sum(n * n for n in lengths) / len(lengths)
    return wer * (1 - wer) * m1 + (spread * wer) ** 2 * m2, m1


def expected_resolution(lengths: Sequence[int], n: int, wer: float, spread: float) -> float:
    """The report's ``wer_resolution_rel`` expected for ``n`` test utterances drawn from ``lengths``:
    half its 95 % bootstrap interval of WER = sum(errors) / sum(words), 1.96 standard errors of
    that ratio, sqrt(n var) / (n E[L]), over W (:func:`_error_variance`)."""
    var, m1 = _error_variance(lengths, wer, spread)
    return 1.96 * math.sqrt(var / n) / (wer * m1)


def utterances_for_resolution(lengths: Sequence[int], wer: float, spread: float,
                                   target: float = 0.10) -> int:
    """The fewest test utterances for which :func:`expected_resolution` is at most ``target``."""
    var, m1 = _error_variance(lengths, wer, spread)
    return math.ceil(1.96**2 * var / (target * wer * m1) ** 2)


def spread_from_interval(wer: float, half_width: float, lengths: Sequence[int]) -> float:
    """The ``spread`` of :func:`expected_resolution` that a measured interval implies:
    the WER ``wer`` with 95 % half-width ``half_width`` over test utterances of ``lengths`` words
    (0 where the interval is no wider than binomial errors alone give)."""
    n, m1 = len(lengths), sum(lengths) / len(lengths)
    m2 = sum(x * x for x in lengths) / n
    per_utt_var = (half_width / 1.96) ** 2 * n * m1**2
    excess = per_utt_var - wer * (1 - wer) * m1
    return math.sqrt(max(excess, 0.0) / (wer**2 * m2))


def describe(seed: int) -> dict[str, Any]:
    """The task's statistics for ``seed``: sizes, vocabulary, OOV rates, sentence lengths (the
    perplexity of the run's LM on dev and test is in a run's report: the graph stage's ``lm``)."""
    books = split_books(seed)
    counts = Counter(w for s in books.lm for w in s.split())
    vocab = set(counts)
    out: dict[str, Any] = {"seed": seed, **books.stats, "vocabulary": len(vocab)}
    for split in ("dev", "test"):
        oov = oov_rate(getattr(books, split), vocab)
        out[f"{split}_oov"] = {**{k: v for k, v in oov.items() if k != "oov_words"},
                               "examples": [w for w, _ in oov["oov_words"]]}
    lengths = [len(u.split()) for u in books.test]
    out["test_words_per_utterance"] = round(sum(lengths) / len(lengths), 2)
    out["test_utterances_for_resolution_0.10"] = {
        f"spread_{name}_{spread}": {f"wer_{w:g}": utterances_for_resolution(lengths, w, spread)
                                    for w in (0.05, 0.10, 0.15, 0.20)}
        for name, spread in MEASURED_SPREADS.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.book_text",
                                description="The books text's statistics: split sizes, vocabulary, OOV rate.")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        print(json.dumps(describe(args.seed), indent=2))
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
