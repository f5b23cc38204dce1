"""The decoding vocabulary: the language model's words and the training transcripts', never dev or test's.

As in published LibriSpeech systems, a word is decodable when the LM knows it: the words of the
user's ARPA (``decode.arpa``, e.g. LibriSpeech's ``3-gram.arpa.gz``, 200k words, kept whole), or
else the words of the LM text (``data.lm_text``, e.g. ``librispeech-lm-norm.txt``; streamed, and
capped at its ``data.lm_vocab_size`` most frequent words when that is > 0), and in both cases the
words of the training transcripts. The dev and test transcripts add nothing: a test word outside
this vocabulary cannot be in the decoding graph, so it is an error the WER counts and the graph
stage reports as an OOV token (:func:`oov_counts`).

The lang stage's lexicon covers this vocabulary and, for the aligner only (every split's frame
labels), the words of every transcript; the graph stage's LM and G hold the vocabulary alone.
Files may be gzip-compressed (``.gz``), as LibriSpeech's ARPA files are shipped.
"""

from __future__ import annotations

import gzip
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

# Symbols of an ARPA model that are not words of the lexicon.
ARPA_SPECIALS = frozenset({"<s>", "</s>", "<unk>", "<UNK>"})


def open_text(path: str | os.PathLike) -> IO[str]:
    """A text file for reading, UTF-8, gunzipped when its name ends in ``.gz``."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def arpa_words(path: str | os.PathLike) -> set[str]:
    """The words of an ARPA model's unigram section (``<s>``, ``</s>``, ``<unk>`` left out), streamed.

    Raises ``ValueError`` naming the file when it has no ``\\1-grams:`` section.
    """
    words: set[str] = set()
    in_unigrams = False
    seen_section = False
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = seen_section = True
                continue
            if not in_unigrams:
                continue
            if not line:
                continue
            if line.startswith("\\"):
                break  # \2-grams: or \end\
            fields = line.split()
            if len(fields) < 2:
                raise ValueError(f"{path}:{lineno}: expected 'log10-prob word [back-off]' in the 1-grams, "
                                 f"got {line!r}; is it an ARPA file?")
            words.add(fields[1])
    if not seen_section:
        raise ValueError(f"{path}: no \\1-grams: section; decode.arpa must be an ARPA language model "
                         "(plain or .gz), e.g. LibriSpeech's 3-gram.arpa.gz")
    return words - ARPA_SPECIALS


def text_word_counts(path: str | os.PathLike) -> Counter[str]:
    """Occurrences of each word of a text (one sentence a line), streamed line by line."""
    counts: Counter[str] = Counter()
    with open_text(path) as f:
        for line in f:
            counts.update(line.split())
    return counts


def top_words(counts: Counter[str], n: int) -> set[str]:
    """The ``n`` most frequent words (ties: alphabetical order); every word for ``n`` <= 0."""
    if n <= 0 or n >= len(counts):
        return set(counts)
    return {w for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:n]}


def manifest_words(manifests: Iterable[str | os.PathLike]) -> set[str]:
    """The words of the transcripts of the manifests (missing files are skipped)."""
    from asr_kd.data.manifest import iter_manifest

    words: set[str] = set()
    for path in manifests:
        if Path(path).exists():
            for utt in iter_manifest(Path(path)):
                words.update(utt.words)
    return words


def decoding_vocabulary(train_manifests: Sequence[str | os.PathLike], lm_text: str | os.PathLike | None,
                        arpa: str | os.PathLike | None, max_lm_words: int = 0) -> tuple[set[str], dict[str, Any]]:
    """The words a decoder may output, and where they came from (a summary).

    ``arpa`` (the user's LM): all its words; else ``lm_text``: its words, the ``max_lm_words``
    most frequent ones when > 0; in both cases plus the words of the training transcripts
    (``train_manifests``). No dev or test transcript is read.
    """
    train = manifest_words(train_manifests)
    if arpa:
        lm_words, source = arpa_words(arpa), f"ARPA {arpa}"
        lm_total = len(lm_words)
    elif lm_text:
        counts = text_word_counts(lm_text)
        lm_words, source = top_words(counts, max_lm_words), f"LM text {lm_text}"
        lm_total = len(counts)
    else:
        lm_words, source, lm_total = set(), "training transcripts only (no LM text or ARPA)", 0
    vocab = lm_words | train
    return vocab, {
        "rule": "LM words + training-transcript words (no dev or test words)",
        "source": source,
        "size": len(vocab),
        "lm_words": len(lm_words),
        "lm_words_before_cap": lm_total,
        "lm_vocab_size": max_lm_words,
        "train_words": len(train),
        "train_words_not_in_lm": len(train - lm_words) if (arpa or lm_text) else 0,
    }


def oov_counts(sentences: Iterable[Sequence[str]], vocab: set[str], examples: int = 20) -> dict[str, Any]:
    """Tokens of ``sentences`` outside ``vocab``: counts, the rate and the most frequent such words."""
    tokens = 0
    oov: Counter[str] = Counter()
    n = 0
    for words in sentences:
        n += 1
        tokens += len(words)
        oov.update(w for w in words if w not in vocab)
    n_oov = sum(oov.values())
    return {"sentences": n, "tokens": tokens, "oov_tokens": n_oov,
            "oov_rate": n_oov / tokens if tokens else 0.0, "oov_types": len(oov),
            "oov_words": [[w, c] for w, c in oov.most_common(examples)]}


def read_word_list(path: str | os.PathLike) -> Iterator[str]:
    """Words of a one-word-a-line file (blank lines skipped)."""
    with open_text(path) as f:
        for line in f:
            w = line.strip()
            if w:
                yield w
