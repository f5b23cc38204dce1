"""Word error rate with jiwer, and the human-readable scoring files of a decode directory.

Owns ``<decode dir>/hyp.txt`` (``utt-id WORD WORD ...``, Kaldi's text format), ``per_utt`` (for
each utterance its REF/HYP lines aligned word by word, the operation row and the counts, like
Kaldi's ``scoring_kaldi/wer_details/per_utt``) and ``wer`` (the summary line Kaldi users grep,
``%WER 8.12 [ 81 / 997, 10 ins, 12 del, 59 sub ]``, plus the sentence error rate), and
``wer.json`` (the same numbers for programs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import jiwer

from asr_kd.fileio import atomic_open, write_json
from asr_kd.files import ScoringDir


@dataclass(frozen=True)
class WerStats:
    """Error counts; rates are fractions of the reference words (WER can exceed 1)."""

    ref_words: int
    substitutions: int
    deletions: int
    insertions: int
    sentences: int
    sentence_errors: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return self.errors / self.ref_words if self.ref_words else float(self.errors > 0)

    def as_dict(self) -> dict[str, float | int]:
        d: dict[str, float | int] = asdict(self)
        n = max(self.ref_words, 1)
        d.update(errors=self.errors, wer=self.wer, sub_rate=self.substitutions / n, del_rate=self.deletions / n,
                 ins_rate=self.insertions / n,
                 ser=self.sentence_errors / self.sentences if self.sentences else 0.0)
        return d

    def summary_line(self) -> str:
        return (f"%WER {100 * self.wer:.2f} [ {self.errors} / {self.ref_words}, {self.insertions} ins, "
                f"{self.deletions} del, {self.substitutions} sub ]")


@dataclass(frozen=True)
class UttAlignment:
    utt: str
    ref: list[str]
    hyp: list[str]
    ops: list[tuple[str, str, str]]  # (op, ref word or GAP, hyp word or GAP); op in C S D I
    stats: WerStats


_OPS = {"equal": "C", "substitute": "S", "delete": "D", "insert": "I"}
GAP = "***"  # the empty side of an insertion or deletion (Kaldi's per_utt files)


def align_words(utt: str, ref: Sequence[str], hyp: Sequence[str]) -> UttAlignment:
    """Levenshtein alignment of one utterance (jiwer), with its error counts."""
    ref, hyp = list(ref), list(hyp)
    if not ref:  # jiwer needs a non-empty reference: every hypothesis word is an insertion
        ops = [("I", GAP, w) for w in hyp]
        return UttAlignment(utt, ref, hyp, ops, WerStats(0, 0, 0, len(hyp), 1, int(bool(hyp))))
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    ops: list[tuple[str, str, str]] = []
    for chunk in out.alignments[0]:
        op = _OPS[chunk.type]
        r = ref[chunk.ref_start_idx : chunk.ref_end_idx]
        h = hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]
        for i in range(max(len(r), len(h))):
            ops.append((op, r[i] if i < len(r) else GAP, h[i] if i < len(h) else GAP))
    errors = out.substitutions + out.deletions + out.insertions
    stats = WerStats(len(ref), out.substitutions, out.deletions, out.insertions, 1, int(errors > 0))
    return UttAlignment(utt, ref, hyp, ops, stats)


def total(stats: Sequence[WerStats]) -> WerStats:
    return WerStats(*(sum(getattr(s, f) for s in stats) for f in
                      ("ref_words", "substitutions", "deletions", "insertions", "sentences", "sentence_errors")))


def score(refs: Mapping[str, Sequence[str]], hyps: Mapping[str, Sequence[str]]) -> tuple[WerStats, list[UttAlignment]]:
    """Corpus WER over the utterances of ``refs``; an utterance with no hypothesis counts as empty."""
    aligned = [align_words(utt, refs[utt], hyps.get(utt, [])) for utt in sorted(refs)]
    return total([a.stats for a in aligned]), aligned


def _per_utt_block(a: UttAlignment) -> str:
    widths = [max(len(r), len(h), 1) for _, r, h in a.ops]
    ref = " ".join(r.ljust(w) for (_, r, _h), w in zip(a.ops, widths))
    hyp = " ".join(h.ljust(w) for (_, _r, h), w in zip(a.ops, widths))
    op = " ".join(o.ljust(w) for (o, _r, _h), w in zip(a.ops, widths))
    s = a.stats
    n_c = sum(1 for o, *_ in a.ops if o == "C")
    return (f"{a.utt} ref  {ref.rstrip()}\n{a.utt} hyp  {hyp.rstrip()}\n{a.utt} op   {op.rstrip()}\n"
            f"{a.utt} #csid {n_c} {s.substitutions} {s.insertions} {s.deletions}\n")


def write_scoring(out_dir: str | os.PathLike, refs: Mapping[str, Sequence[str]],
                  hyps: Mapping[str, Sequence[str]], title: str = "") -> WerStats:
    """Score ``hyps`` against ``refs`` and write ``hyp.txt``, ``per_utt``, ``wer`` and ``wer.json``."""
    out = ScoringDir(out_dir)
    stats, aligned = score(refs, hyps)
    with atomic_open(out.hyp, "w", encoding="utf-8") as f:
        for utt in sorted(hyps):
            f.write(f"{utt} {' '.join(hyps[utt])}".rstrip() + "\n")
    with atomic_open(out.per_utt, "w", encoding="utf-8") as f:
        for a in aligned:
            f.write(_per_utt_block(a))
    with atomic_open(out.wer, "w", encoding="utf-8") as f:
        if title:
            f.write(f"# {title}\n")
        f.write(stats.summary_line() + "\n")
        ser = 100 * stats.sentence_errors / max(stats.sentences, 1)
        f.write(f"%SER {ser:.2f} [ {stats.sentence_errors} / {stats.sentences} ]\n")
    write_json(out.wer_json, stats.as_dict())
    return stats
