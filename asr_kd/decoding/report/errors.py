"""Where two systems' word errors differ: the best student's against the ensemble's on the test set,
from the Kaldi-style ``per_utt`` files the decode stage writes (:mod:`asr_kd.decoding.scoring`).

Both hypotheses are aligned to the same reference, so each reference word is right or wrong (and how:
substituted or deleted) in each system; insertions have no reference word and are counted per
utterance. The comparison answers which kinds of error and which words make the difference, and
whether the words the training transcripts never held (read by no training voice) are where it lies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from asr_kd.decoding.report.rows import ABSENT, ErrorDiff
from asr_kd.decoding.scoring import GAP, align_words

TOP_WORDS = 8


def read_per_utt(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Utterance -> (reference words, hypothesis words) of a ``per_utt`` file (its ``ref`` and ``hyp``
    lines: words padded to the alignment's columns, ``***`` where the other side has a word and this
    one none)."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split(None, 2)
            if len(parts) < 2:
                raise ValueError(f"{path}:{n}: expected '<utt> ref|hyp|op|#csid ...', got {line.rstrip()!r}")
            utt, kind = parts[0], parts[1]
            words = [w for w in parts[2].split() if w != GAP] if len(parts) > 2 else []
            if kind in ("ref", "hyp"):
                ref, hyp = out.setdefault(utt, ([], []))
                (ref if kind == "ref" else hyp).extend(words)
    return out


def _status(ref: list[str], hyp: list[str]) -> tuple[list[str], int]:
    """Per reference word its fate (C, S or D) and the number of inserted words."""
    fate, ins = [], 0
    for op, _r, _h in align_words("", ref, hyp).ops:
        if op == "I":
            ins += 1
        else:
            fate.append(op)
    return fate, ins


def compare_errors(a_name: str, a_path: Path, b_name: str, b_path: Path,
                   train_words: Iterable[str] | None = None, top: int = TOP_WORDS) -> ErrorDiff:
    """How system ``b``'s errors (the student) differ from system ``a``'s (the ensemble) on the
    utterances both decoded. ``train_words``: the training transcripts' words, to split the errors
    into words the acoustic training heard and words it never did."""
    a_utts, b_utts = read_per_utt(a_path), read_per_utt(b_path)
    seen = set(train_words) if train_words is not None else None
    kinds = {k: [0, 0] for k in ("substitution", "deletion", "insertion")}
    only = [Counter(), Counter()]  # reference words wrong in one system and right in the other
    both = 0
    by_seen = {"heard in training": [0, 0, 0], "never in training": [0, 0, 0]}  # words, a wrong, b wrong
    ref_words = 0
    utts = sorted(set(a_utts) & set(b_utts))
    for utt in utts:
        ref, a_hyp = a_utts[utt]
        ref_b, b_hyp = b_utts[utt]
        if ref != ref_b:
            raise ValueError(f"{a_path} and {b_path}: utterance {utt} has different references")
        (fa, ia), (fb, ib) = _status(ref, a_hyp), _status(ref, b_hyp)
        kinds["insertion"][0] += ia
        kinds["insertion"][1] += ib
        ref_words += len(ref)
        for word, x, y in zip(ref, fa, fb):
            for i, f in enumerate((x, y)):
                if f == "S":
                    kinds["substitution"][i] += 1
                elif f == "D":
                    kinds["deletion"][i] += 1
            if x != "C" and y != "C":
                both += 1
            elif x != "C":
                only[0][word] += 1
            elif y != "C":
                only[1][word] += 1
            if seen is not None:
                row = by_seen["heard in training" if word in seen else "never in training"]
                row[0] += 1
                row[1] += x != "C"
                row[2] += y != "C"
    net = Counter(only[1])
    net.subtract(only[0])
    worse = [[w, only[1][w], only[0][w]] for w, d in net.most_common() if d > 0][:top]
    better = [[w, only[1][w], only[0][w]] for w, d in sorted(net.items(), key=lambda kv: (kv[1], kv[0])) if d < 0][:top]
    return ErrorDiff(systems=[a_name, b_name], utterances=len(utts), ref_words=ref_words,
                     by_kind={k: {a_name: v[0], b_name: v[1]} for k, v in kinds.items()},
                     wrong_in_both=both, wrong_only_in={a_name: sum(only[0].values()), b_name: sum(only[1].values())},
                     words_worse=worse, words_better=better,
                     by_training_words=({k: {"words": v[0], a_name: v[1], b_name: v[2]} for k, v in by_seen.items()}
                                        if seen is not None else ABSENT))
