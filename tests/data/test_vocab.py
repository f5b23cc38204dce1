"""The decoding vocabulary: the LM's words plus the training transcripts', never dev or test's."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from asr_kd.data.vocab import arpa_words, decoding_vocabulary, oov_counts, text_word_counts, top_words

TOY_ARPA = """
\\data\\
ngram 1=5
ngram 2=2

\\1-grams:
-99\t<s>\t-0.30103
-0.60206\tTHE\t-0.5
-0.60206\tCAT
-1.0\t<unk>
-0.60206\t</s>

\\2-grams:
-0.1\t<s> THE
-0.2\tTHE CAT

\\end\\
"""


def write_manifest(path: Path, texts: list[str]) -> Path:
    rows = [{"id": f"u{i}", "speaker": "s", "chapter": "c", "audio": "x.flac", "text": t, "num_samples": 16000,
             "sample_rate": 16000} for i, t in enumerate(texts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def corpus(tmp_path: Path) -> dict[str, Path]:
    return {
        "train": write_manifest(tmp_path / "train.jsonl", ["THE DOG RAN", "A DOG SAT"]),
        "dev": write_manifest(tmp_path / "dev.jsonl", ["THE DEVWORD RAN"]),
        "test": write_manifest(tmp_path / "test.jsonl", ["THE TESTWORD SAT"]),
    }


def test_vocabulary_is_lm_text_words_plus_training_words(tmp_path, corpus):
    lm = tmp_path / "lm.txt"
    lm.write_text("THE CAT SAT\nTHE CAT RAN HOME\n")
    vocab, summary = decoding_vocabulary([corpus["train"]], lm, None)
    assert vocab == {"THE", "CAT", "SAT", "RAN", "HOME", "DOG", "A"}
    assert "DEVWORD" not in vocab and "TESTWORD" not in vocab
    assert summary["size"] == 7 and summary["lm_words"] == 5 and summary["train_words"] == 5
    assert summary["train_words_not_in_lm"] == 2  # DOG, A


def test_lm_text_vocabulary_capped_at_the_most_frequent_words(tmp_path, corpus):
    lm = tmp_path / "lm.txt.gz"
    with gzip.open(lm, "wt") as f:
        f.write("THE CAT SAT\nTHE CAT RAN\nTHE ZEBRA\n")
    assert text_word_counts(lm) == {"THE": 3, "CAT": 2, "SAT": 1, "RAN": 1, "ZEBRA": 1}
    vocab, summary = decoding_vocabulary([corpus["train"]], lm, None, max_lm_words=3)
    # THE, CAT, then RAN (ties broken alphabetically: RAN < SAT < ZEBRA); the training words always
    assert vocab == {"THE", "CAT", "RAN", "DOG", "A", "SAT"}
    assert summary["lm_words"] == 3 and summary["lm_words_before_cap"] == 5
    assert top_words(text_word_counts(lm), 0) == {"THE", "CAT", "SAT", "RAN", "ZEBRA"}


def test_user_arpa_words_are_kept_whole(tmp_path, corpus):
    arpa = tmp_path / "lm.arpa.gz"
    with gzip.open(arpa, "wt") as f:
        f.write(TOY_ARPA)
    assert arpa_words(arpa) == {"THE", "CAT"}  # <s>, </s>, <unk> are not words
    lm_text = tmp_path / "lm.txt"
    lm_text.write_text("ONLY IN THE TEXT\n")
    vocab, summary = decoding_vocabulary([corpus["train"]], lm_text, arpa)
    assert vocab == {"THE", "CAT", "DOG", "RAN", "A", "SAT"}  # the ARPA's words, not the text's, + train
    assert summary["source"].startswith("ARPA")


def test_no_lm_means_the_training_words_alone(corpus):
    vocab, summary = decoding_vocabulary([corpus["train"]], None, None)
    assert vocab == {"THE", "DOG", "RAN", "A", "SAT"}
    assert summary["lm_words"] == 0


def test_not_an_arpa_file_is_named(tmp_path):
    bad = tmp_path / "words.txt"
    bad.write_text("HELLO\nWORLD\n")
    with pytest.raises(ValueError, match=r"words.txt: no \\1-grams: section"):
        arpa_words(bad)


def test_oov_counts_tokens_and_rate():
    c = oov_counts([["THE", "TESTWORD", "SAT"], ["TESTWORD", "THE"]], {"THE", "SAT"})
    assert (c["tokens"], c["oov_tokens"], c["oov_types"]) == (5, 2, 1)
    assert c["oov_rate"] == pytest.approx(0.4)
    assert c["oov_words"] == [["TESTWORD", 2]]
