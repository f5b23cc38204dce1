"""The books text (data_prep.book_text): R's lazy-load database, normalisation, sentences, the split."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import pytest

from data_prep import book_text as bt
from data_prep.librispeech import CorpusError

try:
    bt.find_package()
    INSTALLED = True
except CorpusError:
    INSTALLED = False
needs_package = pytest.mark.skipif(not INSTALLED, reason=f"{bt.PACKAGE} is not installed ({bt.INSTALL_HINT})")


# -- R's serialization, written by hand ------------------------------------------------------------
def _int(*values: int) -> bytes:
    return b"".join(struct.pack(">i", v) for v in values)


def _char(s: str | None) -> bytes:
    if s is None:
        return _int(9, -1)
    data = s.encode()
    return _int(9 | (8 << 12), len(data)) + data  # gp: UTF-8


class _Writer:
    """Just enough of R's serializer: a symbol is written once, then referred to."""

    def __init__(self) -> None:
        self.symbols: list[str] = []

    def symbol(self, name: str) -> bytes:
        if name in self.symbols:
            return _int(255 | ((self.symbols.index(name) + 1) << 8))
        self.symbols.append(name)
        return _int(1) + _char(name)

    def names(self, names: list[str]) -> bytes:  # attributes: a pairlist names = c(...)
        return _int(2 | (1 << 10)) + self.symbol("names") + self.strings(names) + _int(254)

    def strings(self, values: list[str | None], names: list[str] | None = None) -> bytes:
        out = _int(16 | ((1 << 9) if names else 0), len(values)) + b"".join(map(_char, values))
        return out + (self.names(names) if names else b"")

    def list(self, items: list[bytes], names: list[str]) -> bytes:
        return _int(19 | (1 << 9), len(items)) + b"".join(items) + self.names(names)


def _serialize(body: bytes) -> bytes:
    return b"X\n" + _int(3, 0x40201, 0x30500, 5) + b"UTF-8" + body


def write_lazyload_db(base: Path, objects: dict[str, list[str | None]]) -> None:
    """``base``.rdx / .rdb holding character vectors, as R's ``tools:::makeLazyLoadDB`` writes them."""
    data, entries = b"", []
    for name, values in objects.items():
        raw = _serialize(_Writer().strings(values))
        blob = struct.pack(">I", len(raw)) + zlib.compress(raw)
        entries.append((len(data), len(blob)))
        data += blob
    w = _Writer()
    variables = w.list([_int(14, 2) + struct.pack(">2d", *e) for e in entries], list(objects))
    index = w.list([variables, w.list([], []), _int(10, 1, 1)], ["variables", "references", "compressed"])
    base.with_suffix(".rdb").write_bytes(data)
    base.with_suffix(".rdx").write_bytes(gzip.compress(_serialize(index)))


def test_lazyload_db_reads_character_vectors(tmp_path: Path) -> None:
    write_lazyload_db(tmp_path / "Rdata", {"emma": ["EMMA", "", None, "Emma Woodhouse, handsome"], "b": ["x"]})
    objects = bt.read_lazyload_db(tmp_path / "Rdata")
    assert objects == {"emma": ["EMMA", "", None, "Emma Woodhouse, handsome"], "b": ["x"]}


def test_missing_package_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="apt-get install --no-install-recommends r-cran-janeaustenr"):
        bt.find_package([str(tmp_path)])


# -- text ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, norm", [
    ('"Well," said Mr. Darcy--"to-morrow!"', "WELL SAID MISTER DARCY TO MORROW"),
    ("Mrs. Jennings's _very_ kind; I don't doubt it.", "MISSUS JENNINGS'S VERY KIND I DON'T DOUBT IT"),
    ("the ladies' maids, at nine o'clock, &c.", "THE LADIES MAIDS AT NINE O'CLOCK ET CETERA"),
    ("an éclat of 'naïveté' & wit", "AN ECLAT OF NAIVETE AND WIT"),
    ("He paid 10,000 pounds.", None),
    ("in the reign of Charles II.", None),
    ("I said so; Dr. Grant and St. James's (the palace)", "I SAID SO DOCTOR GRANT AND SAINT JAMES'S THE PALACE"),
])
def test_normalise_as_librispeech(raw: str, norm: str | None) -> None:
    assert bt.normalise(raw) == norm


def test_sentences_end_before_a_capital_not_after_a_title_or_initial() -> None:
    para = ('"I am sure of it," said Mr. E. Knightley. "It is so." She went out! Oh! how glad. '
            "Did Mrs. Smith come? Yes.")
    assert bt.split_sentences(para) == [
        '"I am sure of it," said Mr. E. Knightley.', '"It is so."', "She went out!", "Oh! how glad.",
        "Did Mrs. Smith come?", "Yes."]


def test_utterances_are_5_to_35_words_long_sentences_cut_at_clauses() -> None:
    assert bt.utterances("She went out.") == []  # 3 words
    assert bt.utterances("She went out to the garden.") == ["SHE WENT OUT TO THE GARDEN"]
    clause = "and she walked slowly along the gravel path towards the house"  # 11 words
    long = "; ".join([clause] * 6) + "."  # 66 words
    utts = bt.utterances(long)
    assert [len(u.split()) for u in utts] == [33, 33]
    assert " ".join(utts) == bt.normalise(long)


def test_chapters_skip_front_matter_notes_and_what_follows_the_end() -> None:
    lines = ["EMMA", "", "By Jane Austen", "", "VOLUME I", "", "CHAPTER I", "", "First para", "line two.", "",
             "[End volume one.]", "", "*Vide a note.", "", "Chapter 2", "", "Second.", "", "THE END", "", "A note."]
    assert bt.chapters(lines) == [["First para line two."], ["Second."]]


# -- the split -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def books() -> bt.BookText:
    return bt.split_books(0)


@needs_package
def test_dev_and_test_are_disjoint_from_lm_text_and_train(books: bt.BookText) -> None:
    lm = set(books.lm)
    assert not set(books.test) & lm and not set(books.dev) & lm
    assert not set(books.test) & set(books.train) and not set(books.dev) & set(books.train)
    assert not set(books.dev) & set(books.test)
    assert not {*books.chapters["dev"], *books.chapters["test"]} & set(books.chapters["lm"])
    # every utterance of a held-out chapter is out of the LM text, not only identical sentences
    assert all(len(p) >= bt.HELD_OUT_UTTERANCES for p in (books.dev, books.test))
    for pool in (books.train, books.dev, books.test):
        assert len(set(pool)) == len(pool)
        assert all(bt.MIN_WORDS <= len(u.split()) <= bt.MAX_WORDS for u in pool)


@needs_package
def test_split_is_a_function_of_the_seed(books: bt.BookText) -> None:
    again, other = bt.split_books(0), bt.split_books(1)
    assert (again.lm, again.train, again.dev, again.test) == (books.lm, books.train, books.dev, books.test)
    assert other.test != books.test and other.chapters["test"] != books.chapters["test"]


@needs_package
def test_task_statistics_vocabulary_and_oov_rate() -> None:
    stats = bt.describe(0)
    assert stats["vocabulary"] >= 5000  # issue 33: a vocabulary of at least 5,000 words
    for split in ("dev", "test"):
        oov = stats[f"{split}_oov"]
        assert 0.001 < oov["oov_rate"] < 0.03, oov  # names and rare words of the held-out chapters
        assert oov["oov_tokens"] == round(oov["oov_rate"] * oov["tokens"])
    assert stats["dropped"]["sentences_with_numbers"] > 0


# -- sizing ---------------------------------------------------------------------------------------
def test_resolution_formula_inverts_and_grows_with_spread() -> None:
    lengths = [5, 10, 17, 30, 12]
    n = bt.utterances_for_resolution(lengths, 0.15, 1.0, target=0.10)
    assert bt.expected_resolution(lengths, n, 0.15, 1.0) <= 0.10 < bt.expected_resolution(lengths, n - 1, 0.15, 1.0)
    half = bt.expected_resolution(lengths, 150, 0.04, 0.8) * 0.04
    assert bt.spread_from_interval(0.04, half, lengths * 30) == pytest.approx(0.8)
    assert bt.utterances_for_resolution(lengths, 0.15, 2.0) > n > bt.utterances_for_resolution(lengths, 0.15, 0.0)


# -- the synthetic corpus with --text books ----------------------------------------------------------
@needs_package
def test_corpus_sentences_come_from_the_split(books: bt.BookText) -> None:
    from data_prep.synthetic import SIZES, SUBSETS, draw_sentences

    spec = SIZES["tiny-wer"]
    counts = {s: sum(spec.speakers[s].values()) for s in SUBSETS}
    sentences, lm = draw_sentences(spec, counts, 0, text="books")
    assert lm == books.lm
    for split in ("train", "dev", "test"):
        assert sentences[split] == getattr(books, split)[: counts[split] * spec.utts_per_speaker[split]]
    assert len(sentences["test"]) == 1000
    # the template corpus is drawn as before
    assert draw_sentences(spec, counts, 0) == draw_sentences(spec, counts, 0, text="template")


def test_text_source_is_in_the_marker_and_the_corpus_directory(tmp_path: Path) -> None:
    import json

    from asr_kd.config import ConfigError, load_config
    from asr_kd.stages.prepare import corpus_root
    from data_prep.synthetic import GENERATOR_VERSION, MARKER_NAME, _marker_matches

    old = {"size": "smoke", "seed": 0, "noise": True, "generator_version": GENERATOR_VERSION}  # before --text
    (tmp_path / MARKER_NAME).write_text(json.dumps(old))
    assert _marker_matches(tmp_path, "smoke", 0, True)
    with pytest.raises(CorpusError, match="'text': 'template'.*'text': 'books'"):
        _marker_matches(tmp_path, "smoke", 0, True, text="books")
    assert corpus_root(load_config("tiny")).name == "synthetic-tiny-seed0"
    books_cfg = load_config("tiny", {"data.synthetic_text": "books"})
    assert corpus_root(books_cfg).name == "synthetic-tiny-seed0-books"
    with pytest.raises(ConfigError, match="oov_policy"):
        load_config("tiny", {"data.synthetic_text": "books", "data.oov_policy": "error"})
    with pytest.raises(ConfigError, match="synthetic_text"):
        load_config("tiny", {"data.synthetic_text": "novels"})


@needs_package
@pytest.mark.slow
def test_smoke_books_corpus(tmp_path: Path) -> None:
    """A smoke-size books corpus (240 utterances, 0.4 h; ~20 s on 2 cores)."""
    import json

    from data_prep.synthetic import LM_TEXT_NAME, MARKER_NAME, ensure_corpus

    root = tmp_path / "synthetic-smoke-seed0-books"
    ensure_corpus(root, "smoke", 0, text="books")
    marker = json.loads((root / MARKER_NAME).read_text())
    assert marker["text"] == "books" and marker["vocabulary_size"] >= 5000
    lm = set((root / LM_TEXT_NAME).read_text().splitlines())
    held_out = [line.split(" ", 1)[1] for sub in ("dev-synth", "test-synth")
                for f in (root / sub).rglob("*.trans.txt") for line in f.read_text().splitlines()]
    assert len(held_out) == 40 and not set(held_out) & lm
    assert marker["splits"]["test"]["hours"] > 0.02  # 20 utterances of ~17 words
