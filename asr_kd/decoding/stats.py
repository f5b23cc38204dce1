"""Uncertainty of the report's figures: a bootstrap over test utterances.

Every system is decoded on the same test utterances, so each figure (a WER, a frame accuracy, a
ratio of differences such as the share of the ensemble's gain a student keeps) is recomputed on
``B`` resamples of the utterances (with replacement, the same resamples for every system: paired).
The 95 % interval is the 2.5th-97.5th percentile of the replicates (Bisani & Ney 2004, "Bootstrap
estimates for confidence intervals in ASR performance evaluation"). This measures the test set's
sampling noise; the spread over training seeds is reported separately (the teachers' std).

Per-utterance counts come from the decode stage (``decode/<system>/test/utt_stats.json``):
``errors`` and ``words`` (for WER), ``hits`` and ``frames`` (for frame accuracy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

NUM_RESAMPLES = 1000
SEED = 0


@dataclass(frozen=True)
class UttCounts:
    """Per-utterance counts of one system on the test split, in a fixed utterance order."""

    utts: tuple[str, ...]
    errors: np.ndarray  # (n,) word errors
    words: np.ndarray  # (n,) reference words
    hits: np.ndarray  # (n,) correctly classified frames
    frames: np.ndarray  # (n,) labelled frames

    @staticmethod
    def from_json(obj: Mapping[str, Sequence]) -> UttCounts:
        return UttCounts(tuple(obj["utts"]), *(np.asarray(obj[k], dtype=np.float64)
                                              for k in ("errors", "words", "hits", "frames")))

    def to_json(self) -> dict[str, list]:
        return {"utts": list(self.utts), **{k: getattr(self, k).astype(int).tolist()
                                            for k in ("errors", "words", "hits", "frames")}}

    def reorder(self, utts: Sequence[str]) -> UttCounts:
        pos = {u: i for i, u in enumerate(self.utts)}
        missing = [u for u in utts if u not in pos]
        if missing:
            raise ValueError(f"utterance counts lack {len(missing)} test utterances, e.g. {missing[0]}")
        idx = np.asarray([pos[u] for u in utts], dtype=np.int64)
        return UttCounts(tuple(utts), self.errors[idx], self.words[idx], self.hits[idx], self.frames[idx])


class Bootstrap:
    """Paired resamples of a common set of test utterances; figures as functions of replicates."""

    def __init__(self, utts: Sequence[str], num_resamples: int = NUM_RESAMPLES, seed: int = SEED) -> None:
        self.utts = tuple(utts)
        n = len(self.utts)
        if n == 0:
            raise ValueError("no test utterances to resample")
        rng = np.random.default_rng(seed)
        self.idx = rng.integers(0, n, size=(num_resamples, n))  # (B, n)

    def _sums(self, values: np.ndarray) -> np.ndarray:
        return values[self.idx].sum(axis=1)  # (B,)

    def wer(self, c: UttCounts) -> np.ndarray:
        """(B,) WER replicates."""
        return self._sums(c.errors) / np.maximum(self._sums(c.words), 1.0)

    def frame_acc(self, c: UttCounts) -> np.ndarray:
        """(B,) frame-accuracy replicates."""
        return self._sums(c.hits) / np.maximum(self._sums(c.frames), 1.0)


def interval(replicates: np.ndarray, level: float = 0.95) -> list[float] | None:
    """``[low, high]``: the central ``level`` percentile interval of the finite replicates; None
    when fewer than half are finite (e.g. a ratio whose denominator is mostly not positive)."""
    r = np.asarray(replicates, dtype=np.float64)
    if r.size == 0 or 2 * np.isfinite(r).sum() < r.size:
        return None
    r = r[np.isfinite(r)]
    a = (1.0 - level) / 2.0
    return [float(np.quantile(r, a)), float(np.quantile(r, 1.0 - a))]


def ratio_of_gains(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den per replicate; NaN where the denominator is not positive (no gain to keep)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def paired_test(a: np.ndarray, b: np.ndarray, point: float) -> dict[str, float | list[float]]:
    """Paired bootstrap of ``a - b`` (replicates of two systems' figure on the same resamples).

    ``p_value`` is two-sided: twice the share of replicates on the far side of zero from the
    observed difference ``point`` (capped at 1).
    """
    diff = a - b
    far = np.mean(diff >= 0) if point < 0 else np.mean(diff <= 0)
    return {"difference": point, "ci": interval(diff), "p_value": float(min(1.0, 2.0 * far))}


def mean_over(reps: Sequence[np.ndarray]) -> np.ndarray:
    """Replicates of the mean over systems (e.g. the mean teacher)."""
    return np.mean(np.stack(reps), axis=0)


