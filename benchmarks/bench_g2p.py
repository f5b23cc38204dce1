"""The G2P of ``data.oov_policy=g2p`` (espeak-ng en-us -> ARPAbet) scored against CMUdict itself.

    python benchmarks/bench_g2p.py                 # the 1,000 held-out words: PER, word accuracy, errors
    python benchmarks/bench_g2p.py --sample tune   # the words the mapping was tuned on

The words are CMUdict's entries of letters (and apostrophes), in a fixed shuffle (seed 15): the
first 1,000 are the held-out test sample; the next ``--n`` (default 2,000) the tuning sample that
:data:`asr_kd.data.g2p.PHONES` was adjusted on. The test sample was not looked at while tuning.

A word's reference is the CMUdict pronunciation (stress stripped, as the lexicon keeps it)
nearest to the G2P's. Phone error rate = edit distance / reference phones, summed over words;
word accuracy = share of words whose G2P pronunciation is one of CMUdict's. Failure modes are
counted per word (a word with two vowel errors counts once) from the edit-distance alignment.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections import Counter

from asr_kd.data.g2p import g2p
from asr_kd.data.lexicon import NONSILENCE_PHONES, cmudict_lexicon

SEED = 15
N_TEST = 1000
VOWELS = frozenset(p for p in NONSILENCE_PHONES if p[0] in "AEIOU")


def sample(which: str, n_tune: int) -> list[str]:
    """The held-out test words (``"test"``) or the tuning words (``"tune"``), disjoint."""
    words = sorted(w for w in cmudict_lexicon() if re.fullmatch(r"[A-Z][A-Z']*", w))
    random.Random(SEED).shuffle(words)
    return words[:N_TEST] if which == "test" else words[N_TEST : N_TEST + n_tune]


def align(ref: tuple[str, ...], hyp: tuple[str, ...]) -> list[tuple[str, str]]:
    """Levenshtein alignment as (ref phone, hyp phone) pairs, "" for a gap."""
    n, m = len(ref), len(hyp)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]))
    pairs, i, j = [], n, m
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i and d[i][j] == d[i - 1][j] + 1:
            pairs.append((ref[i - 1], ""))
            i -= 1
        else:
            pairs.append(("", hyp[j - 1]))
            j -= 1
    return pairs[::-1]


def error_kind(r: str, h: str) -> str:
    """The failure mode of one aligned error (CMUdict phone ``r``, G2P phone ``h``, "" for a gap).

    The first three are conventions the mapping has to choose (where CMUdict itself varies);
    the rest are mostly espeak-ng's letter-to-sound rules disagreeing with CMUdict.
    """
    pair = {r, h}
    if pair == {"AH", "IH"}:
        return "reduced vowel: AH vs IH"
    if pair <= {"ER", "R", ""} or pair <= {"AH", "ER"}:
        return "r-colouring: ER vs R, AH vs ER, R added or lost"
    if pair == {"S", "Z"}:
        return "voicing of s: S vs Z"
    if not r or not h:
        side = r or h
        return f"{'vowel' if side in VOWELS else 'consonant'} {'lost' if not h else 'added'}"
    if r in VOWELS and h in VOWELS:
        return "other vowel for vowel"
    return "consonant for consonant" if r not in VOWELS and h not in VOWELS else "vowel for consonant"


def word_scores(words: list[str], hyps: dict[str, tuple[str, ...]]) -> list[tuple[int, int, bool, list]]:
    """Per word: (edit distance, reference phones, correct, the aligned errors)."""
    lex = cmudict_lexicon()
    out = []
    for w in words:
        hyp = hyps.get(w, ())
        if hyp in lex[w]:
            out.append((0, len(hyp), True, []))
            continue
        ref = min(lex[w], key=lambda r: (sum(a != b for a, b in align(r, hyp)), len(r)))
        ops = [(a, b) for a, b in align(ref, hyp) if a != b]
        out.append((len(ops), len(ref), False, ops))
    return out


def rates(scores: list[tuple[int, int, bool, list]]) -> tuple[float, float]:
    """(phone error rate, word accuracy)."""
    return (sum(s[0] for s in scores) / sum(s[1] for s in scores), sum(s[2] for s in scores) / len(scores))


def bootstrap(scores: list, n: int = 1000) -> tuple[tuple[float, float], tuple[float, float]]:
    """95 % intervals of the phone error rate and the word accuracy, resampling words."""
    rng = random.Random(0)
    draws = [rates(rng.choices(scores, k=len(scores))) for _ in range(n)]
    per, acc = sorted(d[0] for d in draws), sorted(d[1] for d in draws)
    lo, hi = int(0.025 * n), int(0.975 * n) - 1
    return (per[lo], per[hi]), (acc[lo], acc[hi])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", choices=("test", "tune"), default="test")
    ap.add_argument("--n", type=int, default=2000, help="size of the tuning sample")
    ap.add_argument("--jobs", type=int, default=1, help="espeak-ng processes at once")
    args = ap.parse_args()
    words = sample(args.sample, args.n)
    t0 = time.perf_counter()
    hyps = g2p(words, jobs=args.jobs)
    secs = time.perf_counter() - t0
    scores = word_scores(words, hyps)
    (per, acc), (per_ci, acc_ci) = rates(scores), bootstrap(scores)
    n = len(words)
    print(f"| sample | words | phone error rate | word accuracy | words/s |\n|---|---|---|---|---|\n"
          f"| {args.sample} (seed {SEED}) | {n} | {100 * per:.1f} % [{100 * per_ci[0]:.1f}, {100 * per_ci[1]:.1f}] "
          f"| {100 * acc:.1f} % [{100 * acc_ci[0]:.1f}, {100 * acc_ci[1]:.1f}] | {n / secs:,.0f} |\n")
    modes: Counter = Counter()
    pairs: Counter = Counter()
    for w, (_, _, _, ops) in zip(words, scores):
        modes.update({"no pronunciation" if w not in hyps else error_kind(a, b) for a, b in ops})
        pairs.update(f"{a or '-'} -> {b or '-'}" for a, b in ops)
    print("| failure mode (a word can have several) | words | share of words |\n|---|---|---|")
    for mode, c in modes.most_common():
        print(f"| {mode} | {c} | {100 * c / n:.1f} % |")
    print("\nmost frequent errors (CMUdict -> G2P):", ", ".join(f"{p} {c}" for p, c in pairs.most_common(12)))

if __name__ == "__main__":
    main()
