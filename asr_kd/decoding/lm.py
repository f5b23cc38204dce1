"""The n-gram language model of the decoding graph: estimation from text, ARPA writing and reading.

Owns :func:`estimate_kneser_ney` (interpolated modified Kneser-Ney, Chen & Goodman 1998, as in
SRILM's ``-interpolate -kndiscount`` and KenLM's ``lmplz``), :func:`write_arpa` (atomic) and a small
ARPA reader with back-off scoring (:func:`read_arpa`, :class:`ArpaModel`) used for perplexity and
tests. A user-supplied ARPA file (``decode.arpa``, e.g. LibriSpeech's ``3-gram.arpa``) bypasses the
estimator; its size is beyond a pure-Python estimator anyway.

Input text: one sentence a line, words separated by spaces, e.g.::

    THE CAT SAT ON THE MAT
    A DOG RAN

The model (order n):
    p(w | h) = max(a(h w) - D_k(a(h w)), 0) / sum_v a(h v) + gamma(h) * p(w | h[1:])
    gamma(h) = (D_k1 N1(h .) + D_k2 N2(h .) + D_k3 N3+(h .)) / sum_v a(h v)
where a() is the raw count at the highest order and for n-grams that start with ``<s>``, and the
continuation count (number of distinct left neighbours) otherwise; the unigram level interpolates
with the uniform distribution over the vocabulary (``<unk>`` included, ``<s>`` excluded). Because
the model is interpolated, its ARPA back-off weight for a context h is gamma(h) exactly.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asr_kd.data.vocab import open_text
from asr_kd.fileio import atomic_open

log = logging.getLogger(__name__)

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
LOG10_ZERO = -99.0  # ARPA's conventional log10 probability of <s>

Ngram = tuple[str, ...]


@dataclass
class NgramModel:
    """An estimated back-off model: per order, n-gram -> (log10 prob, log10 back-off weight)."""

    order: int
    # orders[k-1][ngram] = (log10 p, log10 bow); bow is 0.0 where the n-gram is never a context
    orders: list[dict[Ngram, tuple[float, float]]] = field(default_factory=list)
    discounts: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def vocab(self) -> list[str]:
        return sorted(w for (w,) in self.orders[0])

    def counts(self) -> list[int]:
        return [len(d) for d in self.orders]


# ---------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------
def read_sentences(path: str | os.PathLike, vocab: set[str] | None = None) -> tuple[list[list[str]], int]:
    """Sentences of a text file (one a line); with ``vocab``, lines with other words are skipped.

    Returns (sentences, number of lines skipped because of out-of-vocabulary words).
    """
    sentences: list[list[str]] = []
    skipped = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            words = line.split()
            if not words:
                continue
            if vocab is not None and any(w not in vocab for w in words):
                skipped += 1
                continue
            sentences.append(words)
    if not sentences:
        raise ValueError(f"{path}: no usable sentences for the language model (one sentence a line expected)")
    return sentences, skipped


def raw_counts(sentences: Iterable[Sequence[str]], order: int) -> list[dict[Ngram, int]]:
    """counts[k-1][ngram]: occurrences of each k-gram (k = 1..order) in ``<s> w1 .. wm </s>``."""
    counts: list[dict[Ngram, int]] = [defaultdict(int) for _ in range(order)]
    for words in sentences:
        toks = (BOS, *words, EOS)
        for i in range(1, len(toks)):
            for k in range(1, order + 1):
                if i - k + 1 < 0:
                    break
                counts[k - 1][toks[i - k + 1 : i + 1]] += 1
    return [dict(c) for c in counts]


def adjusted_counts(raw: list[dict[Ngram, int]]) -> list[dict[Ngram, int]]:
    """Kneser-Ney counts: raw at the top order and for n-grams starting with <s>; else continuation."""
    order = len(raw)
    adjusted = [dict() for _ in range(order)]  # type: list[dict[Ngram, int]]
    adjusted[order - 1] = dict(raw[order - 1])
    for k in range(order - 1, 0, -1):  # k = order of the lower level
        cont: dict[Ngram, int] = defaultdict(int)
        for ngram in raw[k]:  # (k+1)-grams: each distinct one adds a left neighbour to its suffix
            cont[ngram[1:]] += 1
        level = {}
        for ngram, c in raw[k - 1].items():
            level[ngram] = c if ngram[0] == BOS else cont.get(ngram, 0)
        adjusted[k - 1] = {g: c for g, c in level.items() if c > 0}
    return adjusted


def modified_discounts(counts: Iterable[int]) -> tuple[float, float, float]:
    """(D1, D2, D3+) from the count-of-counts n1..n4 (Chen & Goodman); clamped on tiny data."""
    n = [0, 0, 0, 0, 0]
    for c in counts:
        if 1 <= c <= 4:
            n[c] += 1
    if n[1] == 0 or n[2] == 0:
        return (0.5, 1.0, 1.5)  # too little data for estimates: conventional values
    y = n[1] / (n[1] + 2 * n[2])
    d1 = 1 - 2 * y * n[2] / n[1]
    d2 = 2 - 3 * y * n[3] / n[2]
    d3 = 3 - 4 * y * n[4] / n[3] if n[3] > 0 else 1.5
    # Valid modified-KN discounts satisfy 0 < D_k <= k; keep them there on degenerate counts.
    return (min(max(d1, 0.05), 1.0), min(max(d2, 0.05), 2.0), min(max(d3, 0.05), 3.0))


# ---------------------------------------------------------------------------------------------
# Estimation
# ---------------------------------------------------------------------------------------------
def _discount(c: int, d: tuple[float, float, float]) -> float:
    return d[min(c, 3) - 1]


def _context_stats(level: dict[Ngram, int], d: tuple[float, float, float]) -> dict[Ngram, tuple[float, float]]:
    """Per context h: (total count, gamma numerator sum_w D(a(h w)))."""
    stats: dict[Ngram, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for ngram, c in level.items():
        s = stats[ngram[:-1]]
        s[0] += c
        s[1] += _discount(c, d)
    return {h: (tot, num) for h, (tot, num) in stats.items()}


def estimate_kneser_ney(sentences: Sequence[Sequence[str]], order: int = 3,
                        vocab: Iterable[str] = (), with_unk: bool = True) -> NgramModel:
    """Interpolated modified Kneser-Ney n-gram model of ``sentences``.

    ``vocab`` adds words that get only the uniform share of probability (e.g. the lexicon's words
    that the text lacks); ``</s>`` is always in the vocabulary, ``<unk>`` when ``with_unk``.
    """
    if order < 1:
        raise ValueError(f"LM order must be >= 1, got {order}")
    adjusted = adjusted_counts(raw_counts(sentences, order))
    words = {w for (w,) in adjusted[0]} | set(vocab) | {EOS} | ({UNK} if with_unk else set())
    words.discard(BOS)
    discounts = [modified_discounts(level.values()) for level in adjusted]
    probs: list[dict[Ngram, float]] = []
    gammas: list[dict[Ngram, float]] = []
    uniform = 1.0 / len(words)
    for k in range(1, order + 1):
        level = adjusted[k - 1]
        d = discounts[k - 1]
        ctx = _context_stats(level, d)
        gamma = {h: num / tot for h, (tot, num) in ctx.items()}
        p: dict[Ngram, float] = {}
        items = level.items() if k > 1 else [((w,), level.get((w,), 0)) for w in words]
        for ngram, c in items:
            h = ngram[:-1]
            tot = ctx[h][0] if h in ctx else 0.0
            lower = uniform if k == 1 else probs[k - 2][ngram[1:]]
            if tot == 0.0:
                p[ngram] = lower
                continue
            p[ngram] = max(c - _discount(c, d), 0.0) / tot + gamma[h] * lower if c > 0 else gamma[h] * lower
        probs.append(p)
        gammas.append(gamma)
    return _to_backoff_model(order, probs, gammas, discounts)


def _to_backoff_model(order: int, probs: list[dict[Ngram, float]], gammas: list[dict[Ngram, float]],
                      discounts: list[tuple[float, float, float]]) -> NgramModel:
    model = NgramModel(order=order, discounts=discounts)
    for k in range(1, order + 1):
        next_gamma = gammas[k] if k < order else {}
        level: dict[Ngram, tuple[float, float]] = {}
        for ngram, p in probs[k - 1].items():
            bow = next_gamma.get(ngram)
            level[ngram] = (math.log10(p), math.log10(bow) if bow else 0.0)
        if k == 1:
            bow = next_gamma.get((BOS,))
            level[(BOS,)] = (LOG10_ZERO, math.log10(bow) if bow else 0.0)
        model.orders.append(level)
    return model


# ---------------------------------------------------------------------------------------------
# ARPA
# ---------------------------------------------------------------------------------------------
def write_arpa(model: NgramModel, path: str | os.PathLike) -> None:
    """Write ``model`` in ARPA format (atomically); n-grams sorted within each order."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("\n\\data\\\n")
        for k, level in enumerate(model.orders, 1):
            f.write(f"ngram {k}={len(level)}\n")
        for k, level in enumerate(model.orders, 1):
            f.write(f"\n\\{k}-grams:\n")
            for ngram in sorted(level):
                lp, bow = level[ngram]
                line = f"{lp:.6f}\t{' '.join(ngram)}"
                if k < model.order and bow != 0.0:
                    line += f"\t{bow:.6f}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")


def read_arpa(path: str | os.PathLike, keep: set[Ngram] | None = None) -> NgramModel:
    """Parse an ARPA file (plain or ``.gz``) into an :class:`NgramModel`, streamed; with ``keep``, only
    those n-grams are kept (what scoring a small text needs: :func:`text_ngrams`), so a 200k-word
    LibriSpeech 3-gram is read in bounded memory."""
    orders: list[dict[Ngram, tuple[float, float]]] = []
    current = 0
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("ngram ") or line == "\\data\\":
                continue
            if line == "\\end\\":
                break
            if line.startswith("\\") and line.endswith("-grams:"):
                current = int(line[1:].split("-")[0])
                while len(orders) < current:
                    orders.append({})
                continue
            if current == 0:
                raise ValueError(f"{path}:{lineno}: n-gram line before any \\N-grams: section")
            fields = line.split()
            if len(fields) not in (current + 1, current + 2):
                raise ValueError(f"{path}:{lineno}: expected {current} words, a log-prob and an "
                                 f"optional back-off weight; got {line!r}")
            ngram = tuple(fields[1 : current + 1])
            if keep is not None and ngram not in keep:
                continue
            bow = float(fields[current + 1]) if len(fields) == current + 2 else 0.0
            orders[current - 1][ngram] = (float(fields[0]), bow)
    if not orders:
        raise ValueError(f"{path}: no n-grams found; is it an ARPA file?")
    return NgramModel(order=len(orders), orders=orders)


class ArpaModel:
    """Back-off scoring of an :class:`NgramModel`: log10 p(w | history)."""

    def __init__(self, model: NgramModel) -> None:
        self.model = model

    def log10_prob(self, history: Sequence[str], word: str) -> float:
        n = self.model.order
        hist = tuple(history)[-(n - 1):] if n > 1 else ()
        bow_total = 0.0
        while True:
            ngram = (*hist, word)
            entry = self.model.orders[len(ngram) - 1].get(ngram)
            if entry is not None:
                return entry[0] + bow_total
            if not hist:
                unk = self.model.orders[0].get((UNK,))
                if unk is None:
                    raise KeyError(f"word {word!r} is not in the LM and the LM has no {UNK}")
                return unk[0] + bow_total
            ctx = self.model.orders[len(hist) - 1].get(hist)
            bow_total += ctx[1] if ctx is not None else 0.0
            hist = hist[1:]

    def sentence_log10_prob(self, words: Sequence[str]) -> float:
        toks = [BOS, *words, EOS]
        return sum(self.log10_prob(toks[:i], toks[i]) for i in range(1, len(toks)))


def perplexity(model: NgramModel, sentences: Iterable[Sequence[str]]) -> float:
    """Per-token perplexity (``</s>`` counted, as SRILM's ppl) of ``sentences``."""
    scorer = ArpaModel(model)
    total, tokens = 0.0, 0
    for words in sentences:
        total += scorer.sentence_log10_prob(words)
        tokens += len(words) + 1
    if tokens == 0:
        raise ValueError("perplexity of an empty text")
    return 10 ** (-total / tokens)


def text_ngrams(sentences: Iterable[Sequence[str]], order: int) -> set[Ngram]:
    """Every n-gram (n <= ``order``) that scoring ``sentences`` with an order-``order`` model may
    look up: the n-grams ending at each token of ``<s> w1 .. wm </s>`` and their contexts."""
    keep: set[Ngram] = set()
    for words in sentences:
        toks = (BOS, *words, EOS)
        for i in range(len(toks)):
            for k in range(1, order + 1):
                if i - k + 1 < 0:
                    break
                keep.add(toks[i - k + 1 : i + 1])
    return keep


def oov_perplexity(model: NgramModel, sentences: Iterable[Sequence[str]], vocab: set[str]) -> dict[str, float | int]:
    """Perplexity as SRILM's ``ngram -ppl`` reports it for a closed-vocabulary model: words outside
    ``vocab`` (OOVs) are not scored and not counted, and a word after one is scored through the
    back-off, its context holding the OOV (no n-gram holds it); ``</s>`` is scored and counted.

    ``ppl = 10 ** (-sum log10 p / (tokens - oov_tokens + sentences))``. Returns that, with the
    counts (and ``log10_prob``, the sum).
    """
    scorer = ArpaModel(model)
    total, scored, n_sent, n_tok, n_oov = 0.0, 0, 0, 0, 0
    for words in sentences:
        n_sent += 1
        n_tok += len(words)
        toks = [BOS, *words, EOS]
        for i in range(1, len(toks)):
            if i < len(toks) - 1 and toks[i] not in vocab:
                n_oov += 1
                continue
            total += scorer.log10_prob(toks[:i], toks[i])
            scored += 1
    if scored == 0:
        raise ValueError("perplexity of an empty text")
    return {"perplexity": 10 ** (-total / scored), "log10_prob": total, "sentences": n_sent, "tokens": n_tok,
            "oov_tokens": n_oov, "scored_tokens": scored}


def arpa_perplexity(arpa: str | os.PathLike, sentences: Sequence[Sequence[str]], vocab: set[str],
                    order: int | None = None) -> dict[str, float | int]:
    """:func:`oov_perplexity` of an ARPA file, reading only the n-grams ``sentences`` need."""
    if order is None:
        order = arpa_order(arpa)
    return oov_perplexity(read_arpa(arpa, keep=text_ngrams(sentences, order)), sentences, vocab)


def arpa_order(path: str | os.PathLike) -> int:
    """The order of an ARPA model, from its ``\\data\\`` header (``ngram N=...`` lines)."""
    order = 0
    with open_text(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("ngram ") and "=" in line:
                order = max(order, int(line[len("ngram "):].split("=")[0]))
            elif line.startswith("\\") and line.endswith("-grams:"):
                break
    if order == 0:
        raise ValueError(f"{path}: no 'ngram N=count' lines in its \\data\\ header; is it an ARPA file?")
    return order


def copy_arpa_adding_unigrams(src: str | os.PathLike, dst: str | os.PathLike, words: Iterable[str]) -> dict[str, object]:
    """Copy an ARPA model (plain or ``.gz``) to ``dst`` (plain text, atomically), adding ``words`` it
    lacks as unigrams at the log-probability of its ``<unk>`` (else of its rarest unigram), no back-off.

    So the training transcripts' words a user's LM lacks stay decodable (the decoding vocabulary is
    the LM's words plus theirs); the model is not renormalised (the added mass is tiny next to a
    200k-word vocabulary). Returns the added count and the log-probability used.
    """
    present, lowest = unigram_scan(src)
    add = sorted(set(words) - present)
    floor = lowest if add else None
    with open_text(src) as f, atomic_open(dst, "w", encoding="utf-8") as out:
        in_unigrams = False
        for line in f:
            stripped = line.strip()
            if stripped.startswith("ngram 1=") and add:
                out.write(f"ngram 1={int(stripped.split('=')[1]) + len(add)}\n")
                continue
            if stripped == "\\1-grams:":
                in_unigrams = True
            elif in_unigrams and stripped.startswith("\\"):
                out.writelines(f"{floor:.6f}\t{w}\n" for w in add)
                out.write("\n")
                in_unigrams = False
            out.write(line if line.endswith("\n") else line + "\n")
    return {"added_unigrams": len(add), "added_log10_prob": floor, "added_examples": add[:20]}


def unigram_scan(path: str | os.PathLike) -> tuple[set[str], float]:
    """One pass over an ARPA model's unigrams: every symbol (``<s>``, ``</s>``, ``<unk>`` included), and
    the log10 probability of ``<unk>``, else of its rarest word."""
    symbols: set[str] = set()
    lowest, unk = 0.0, None
    with open_text(path) as f:
        in_unigrams = False
        for line in f:
            s = line.strip()
            if s == "\\1-grams:":
                in_unigrams = True
            elif in_unigrams and s.startswith("\\"):
                break
            elif in_unigrams and s:
                fields = s.split()
                symbols.add(fields[1])
                if fields[1] in ("<unk>", "<UNK>"):
                    unk = float(fields[0])
                elif fields[1] != BOS:
                    lowest = min(lowest, float(fields[0]))
    return symbols, (unk if unk is not None else lowest)


def build_arpa(text: str | os.PathLike, out: str | os.PathLike, order: int = 3,
               vocab: set[str] | None = None) -> dict[str, object]:
    """Estimate a Kneser-Ney model from ``text`` and write it to ``out``; returns a summary.

    With ``vocab`` (the lexicon's words), sentences with other words are skipped and counted,
    every vocabulary word gets a unigram so that the decoder can still output it, and ``<unk>``
    is left out unless the vocabulary has it (a closed-vocabulary model, as the graph needs).
    """
    sentences, skipped = read_sentences(text, vocab)
    with_unk = vocab is None or UNK in vocab
    model = estimate_kneser_ney(sentences, order, vocab or (), with_unk=with_unk)
    write_arpa(model, out)
    counts = model.counts()
    log.info("LM: %d sentences (%d skipped for OOV words), order %d, n-grams %s -> %s",
             len(sentences), skipped, order, counts, Path(out).name)
    return {"sentences": len(sentences), "skipped_oov_sentences": skipped, "order": order,
            "ngrams": counts}
