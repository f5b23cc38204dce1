"""GMM features for the aligner: MFCC + deltas + delta-deltas with per-speaker mean normalisation.

As Kaldi's ``steps/train_mono.sh`` (``apply-cmvn --norm-vars=false`` per speaker, then
``add-deltas``): 13 MFCCs become 39-dimensional frames. The MFCCs come from the features stage
(``features/<split>/mfcc.scp``: raw float32 (T, 13) matrices, read with kaldiio).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from asr_kd.errors import InputError

log = logging.getLogger(__name__)

DELTA_WINDOW = 2  # Kaldi add-deltas default


def deltas(x: np.ndarray, window: int = DELTA_WINDOW) -> np.ndarray:
    """Kaldi's regression deltas: sum_n n (x[t+n] - x[t-n]) / (2 sum_n n^2), edges replicated.

    x: (T, D) -> (T, D)
    """
    T = x.shape[0]
    padded = np.concatenate([np.repeat(x[:1], window, 0), x, np.repeat(x[-1:], window, 0)])  # (T+2w, D)
    num = np.zeros_like(x, dtype=np.float64)
    for n in range(1, window + 1):
        num += n * (padded[window + n : window + n + T] - padded[window - n : window - n + T])
    return (num / (2 * sum(n * n for n in range(1, window + 1)))).astype(np.float32)


def add_deltas(x: np.ndarray) -> np.ndarray:
    """(T, D) -> (T, 3D): static, delta, delta-delta."""
    d1 = deltas(x)
    d2 = deltas(d1)
    return np.concatenate([x, d1, d2], axis=1).astype(np.float32)


def speaker_means(
    feats: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]], utt2spk: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """Per-speaker mean of the raw features: speaker -> (D,). ``feats``: a mapping, or ``(utt, (T, D))``
    pairs read one at a time (the same order gives the same means, bit for bit)."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = defaultdict(int)
    for utt, x in feats.items() if isinstance(feats, Mapping) else feats:
        spk = utt2spk[utt]
        sums[spk] = sums.get(spk, 0) + x.sum(axis=0, dtype=np.float64)
        counts[spk] += x.shape[0]
    return {spk: (s / counts[spk]).astype(np.float32) for spk, s in sums.items()}


def read_mfcc(scp: Path, utt_ids: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """MFCC matrices for ``utt_ids`` from a kaldiio scp; and the ids missing from it."""
    from asr_kd.data.scp import load_scp

    if not Path(scp).exists():
        raise InputError(f"{scp} is missing; run the features stage (--stage features)")
    table = load_scp(scp)
    out: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for utt in utt_ids:
        if utt not in table:
            missing.append(utt)
            continue
        out[utt] = np.asarray(table[utt], dtype=np.float32)
    return out, missing


def stream_speaker_means(
    scp: Path, utt_ids: Sequence[str], utt2spk: Mapping[str, str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Per-speaker means of the MFCCs of ``utt_ids`` (speaker -> (13,)), reading one utterance at a
    time; and the ids missing from ``scp``. Equal to :func:`speaker_means` of :func:`read_mfcc`'s
    matrices, in a fraction of the memory."""
    from asr_kd.data.scp import load_scp

    if not Path(scp).exists():
        raise InputError(f"{scp} is missing; run the features stage (--stage features)")
    table = load_scp(scp)
    missing = [u for u in utt_ids if u not in table]
    found = (u for u in utt_ids if u in table)
    return speaker_means(((u, np.asarray(table[u], dtype=np.float32)) for u in found), utt2spk), missing


def gmm_features(
    raw: Mapping[str, np.ndarray], utt2spk: Mapping[str, str], means: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Per-speaker mean-normalised MFCC + deltas: utt -> (T, 3 * num_ceps) float32. ``means``: the
    speakers' means over their whole split (:func:`stream_speaker_means`); default: from ``raw``."""
    means = speaker_means(raw, utt2spk) if means is None else means
    return {utt: add_deltas(x - means[utt2spk[utt]]) for utt, x in raw.items()}
