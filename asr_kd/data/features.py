"""Acoustic features: Kaldi-compatible log-Mel filterbanks and MFCCs, and CMVN statistics.

This module owns the ``features`` stage:

* audio is read with soundfile (``torchaudio.load`` needs torchcodec), checked for its sample
  rate, and scaled to the 16-bit integer range as Kaldi does;
* 40-dim log-Mel fbank (the DNN's input) and 13-dim MFCC (the GMM aligner's input) come from
  ``torchaudio.compliance.kaldi`` with Kaldi's framing (25 ms window, 10 ms shift,
  ``snip_edges=True``: ``1 + (num_samples - window) // shift`` frames) and no dither, so that
  the features are deterministic;
* raw (un-normalised) float32 features go to Kaldi ark/scp files (``features/<split>/``, the
  ark named relative to the scp: :mod:`asr_kd.data.scp`);
* CMVN statistics (count, sum, sum of squares) per speaker for every split, and global
  statistics from the training split only, go to ``features/cmvn.json``.

Per-speaker CMVN is Kaldi style: every speaker, including dev/test speakers, is normalised by
its own statistics (mean and variance). Global CMVN uses the training statistics for everyone.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as ta_kaldi

from asr_kd.accounting import tally
from asr_kd.config import FeatureConfig
from asr_kd.data.manifest import Utterance, read_manifest
from asr_kd.data.scp import ark_scp_writer
from asr_kd.errors import InputError
from asr_kd.fileio import read_json, write_json
from asr_kd.parallel import worker_map
from asr_kd.progress import progress

log = logging.getLogger(__name__)

INT16_SCALE = 32768.0  # Kaldi computes features on samples in the 16-bit integer range
MFCC_MEL_BINS = 23  # Kaldi's default for MFCC (egs/librispeech/s5/conf/mfcc.conf)
CHUNK_UTTS = 16  # at most this many utterances per work item sent to a worker process
POOL_MIN_AUDIO_S = 600.0  # less audio than this is processed without worker processes
MAX_NAMED_FAILURES = 50  # failures listed by name in the stage summary (all are counted and logged)
VAR_FLOOR = 1e-10


class AudioError(ValueError):
    """Audio that cannot be used (unreadable, empty, wrong sample rate); names the file.

    ``reason`` is the loss reason counted in the stage summary (the prepare stage's names)."""

    def __init__(self, message: str, reason: str = "unreadable_audio") -> None:
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Audio and features of one utterance
# ---------------------------------------------------------------------------------------------
def read_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Mono float32 samples in [-1, 1) of ``path``; raises :class:`AudioError` naming the file."""
    try:
        samples, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{path}: cannot read audio ({e}); replace or remove the file") from e
    if sr != sample_rate:
        raise AudioError(
            f"{path}: sample rate {sr} Hz, expected {sample_rate} Hz; resample it "
            f"(e.g. sox in.flac -r {sample_rate} out.flac) or set data.sample_rate", "wrong_sample_rate"
        )
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: no samples; remove the file and its transcript line", "empty_audio")
    return samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)  # (N,)


def num_frames(num_samples: int, sample_rate: int, cfg: FeatureConfig) -> int:
    """Frames Kaldi makes of ``num_samples`` with ``snip_edges=True`` (0 if shorter than a window)."""
    window = int(sample_rate * cfg.frame_length_ms / 1000)
    shift = int(sample_rate * cfg.frame_shift_ms / 1000)
    if num_samples < window:
        return 0
    return 1 + (num_samples - window) // shift


def samples_for_frames(frames: int, sample_rate: int, cfg: FeatureConfig) -> int:
    """The fewest samples that make ``frames`` frames (the inverse of :func:`num_frames`)."""
    window = int(sample_rate * cfg.frame_length_ms / 1000)
    shift = int(sample_rate * cfg.frame_shift_ms / 1000)
    return window + (frames - 1) * shift if frames > 0 else 0


def _waveform(samples: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32) * INT16_SCALE)[None]  # (1, N)


def fbank(samples: np.ndarray, sample_rate: int, cfg: FeatureConfig) -> np.ndarray:
    """Kaldi log-Mel filterbank of float samples in [-1, 1): (T, num_mel_bins) float32."""
    feats = ta_kaldi.fbank(
        _waveform(samples),
        num_mel_bins=cfg.num_mel_bins,
        frame_length=cfg.frame_length_ms,
        frame_shift=cfg.frame_shift_ms,
        sample_frequency=float(sample_rate),
        dither=0.0,
        energy_floor=0.0,
        snip_edges=True,
    )  # (T, num_mel_bins)
    return feats.numpy().astype(np.float32, copy=False)


def mfcc(samples: np.ndarray, sample_rate: int, cfg: FeatureConfig) -> np.ndarray:
    """Kaldi MFCC (no energy, 23 mel bins, as Kaldi's LibriSpeech recipe): (T, num_ceps) float32."""
    feats = ta_kaldi.mfcc(
        _waveform(samples),
        num_ceps=cfg.num_ceps,
        num_mel_bins=MFCC_MEL_BINS,
        frame_length=cfg.frame_length_ms,
        frame_shift=cfg.frame_shift_ms,
        sample_frequency=float(sample_rate),
        dither=0.0,
        energy_floor=0.0,
        use_energy=False,
        snip_edges=True,
    )  # (T, num_ceps)
    return feats.numpy().astype(np.float32, copy=False)


@dataclass(frozen=True)
class UttFeatures:
    id: str
    speaker: str
    fbank: np.ndarray | None  # (T, num_mel_bins)
    mfcc: np.ndarray | None  # (T, num_ceps)
    duration: float  # seconds of audio
    error: str = ""  # why the utterance failed ("" = ok)
    reason: str = ""  # the failure's loss reason (AudioError.reason)


def utterance_features(utt: Utterance, cfg: FeatureConfig, sample_rate: int) -> UttFeatures:
    """Fbank and MFCC of one utterance; a failure is returned (with its reason), not raised."""
    try:
        samples = read_audio(utt.audio, sample_rate)
        if num_frames(len(samples), sample_rate, cfg) == 0:
            raise AudioError(f"{utt.audio}: {len(samples)} samples, shorter than one frame", "too_short")
        fb = fbank(samples, sample_rate, cfg)
        mf = mfcc(samples, sample_rate, cfg)
    except AudioError as e:
        return UttFeatures(utt.id, utt.speaker, None, None, 0.0, str(e), e.reason)
    return UttFeatures(utt.id, utt.speaker, fb, mf, len(samples) / sample_rate)


def _features_chunk(args: tuple[list[Utterance], FeatureConfig, int]) -> list[UttFeatures]:
    torch.set_num_threads(1)
    utts, cfg, sample_rate = args
    return [utterance_features(u, cfg, sample_rate) for u in utts]


def iter_features(utts: Sequence[Utterance], cfg: FeatureConfig, sample_rate: int, jobs: int = 1,
                  desc: str = "features") -> Iterator[UttFeatures]:
    """Features of ``utts`` in order, computed in ``jobs`` worker processes (1: in this process).

    Workers are spawned, not forked (forking after torch has started its thread pools can hang)."""
    size = max(1, min(CHUNK_UTTS, math.ceil(len(utts) / (4 * jobs))))
    chunks = [list(utts[i : i + size]) for i in range(0, len(utts), size)]
    bar = progress(total=len(utts), desc=desc, unit="utt", leave=False)
    for chunk_results in worker_map(_features_chunk, [(c, cfg, sample_rate) for c in chunks], jobs, start="spawn"):
        for res in chunk_results:
            bar.update(1)
            yield res
    bar.close()


def feature_jobs(cfg: FeatureConfig, audio_seconds: float) -> int:
    """Worker processes for ``audio_seconds`` of audio: ``cfg.num_workers``, or 1 (this process) for
    less than ``POOL_MIN_AUDIO_S`` (each worker start costs seconds: it imports torch)."""
    return max(1, cfg.num_workers) if audio_seconds >= POOL_MIN_AUDIO_S else 1


# ---------------------------------------------------------------------------------------------
# CMVN
# ---------------------------------------------------------------------------------------------
@dataclass
class Stats:
    """Sufficient statistics of a set of frames: count, per-dimension sum and sum of squares."""

    count: int
    sum: np.ndarray  # (D,) float64
    sumsq: np.ndarray  # (D,) float64

    @classmethod
    def zeros(cls, dim: int) -> Stats:
        return cls(0, np.zeros(dim), np.zeros(dim))

    def add(self, feats: np.ndarray) -> None:
        x = feats.astype(np.float64)  # (T, D)
        self.count += x.shape[0]
        self.sum += x.sum(axis=0)
        self.sumsq += (x * x).sum(axis=0)

    def merge(self, other: Stats) -> None:
        self.count += other.count
        self.sum += other.sum
        self.sumsq += other.sumsq

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count == 0:
            raise ValueError("CMVN statistics of zero frames")
        mean = self.sum / self.count
        var = np.maximum(self.sumsq / self.count - mean * mean, VAR_FLOOR)
        return mean, np.sqrt(var)

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "sum": self.sum.tolist(), "sumsq": self.sumsq.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Stats:
        return cls(int(d["count"]), np.asarray(d["sum"], dtype=np.float64), np.asarray(d["sumsq"], dtype=np.float64))


@dataclass
class CmvnStats:
    """CMVN statistics one split needs: the global (training) stats and its speakers' stats."""

    global_stats: Stats
    speakers: dict[str, Stats]


def write_cmvn(path: Path, global_stats: Stats, per_split: dict[str, dict[str, Stats]]) -> None:
    """``cmvn.json``: ``{"dim", "global": stats, "speakers": {split: {speaker: stats}}}``."""
    write_json(path, {
        "dim": int(global_stats.sum.shape[0]),
        "global": global_stats.to_json(),
        "speakers": {split: {spk: s.to_json() for spk, s in spks.items()} for split, spks in per_split.items()},
    })


def load_cmvn(path: str | os.PathLike, split: str) -> CmvnStats:
    """The global stats and the stats of ``split``'s speakers from ``cmvn.json``."""
    tree = read_json(path)
    if split not in tree["speakers"]:
        raise InputError(f"{path}: no CMVN statistics for split {split!r}; re-run the features stage")
    speakers = {spk: Stats.from_json(s) for spk, s in tree["speakers"][split].items()}
    return CmvnStats(Stats.from_json(tree["global"]), speakers)


def apply_cmvn(feats: np.ndarray, speaker: str, stats: CmvnStats, mode: str) -> np.ndarray:
    """Normalise (T, D) features: ``speaker`` (own mean/std), ``global`` (training), or ``none``."""
    if mode == "none":
        return feats.astype(np.float32, copy=False)
    if mode == "speaker":
        if speaker not in stats.speakers:
            raise InputError(f"no CMVN statistics for speaker {speaker!r}; re-run the features stage")
        s = stats.speakers[speaker]
    elif mode == "global":
        s = stats.global_stats
    else:
        raise ValueError(f"CMVN mode must be speaker, global or none; got {mode!r}")
    mean, std = s.mean_std()  # (D,), (D,)
    return ((feats - mean) / std).astype(np.float32)  # (T, D)


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------
def _features_split(utts: list[Utterance], fbank_scp: Path, mfcc_scp: Path, split: str, cfg: FeatureConfig,
                    sample_rate: int, jobs: int) -> tuple[dict[str, Any], dict[str, Stats]]:
    speakers: dict[str, Stats] = {}
    failures: list[dict[str, str]] = []
    frames, seconds, t0 = 0, 0.0, time.time()
    audio_of = {u.id: u.audio for u in utts}
    with ark_scp_writer(fbank_scp) as fb_out, ark_scp_writer(mfcc_scp) as mf_out:
        for res in iter_features(utts, cfg, sample_rate, jobs, desc=f"features {split}"):
            if res.error:
                log.warning("skipping %s: %s", res.id, res.error)
                failures.append({"id": res.id, "audio": audio_of[res.id], "error": res.error, "reason": res.reason})
                continue
            assert res.fbank is not None and res.mfcc is not None
            fb_out.write(res.id, res.fbank)
            mf_out.write(res.id, res.mfcc)
            speakers.setdefault(res.speaker, Stats.zeros(res.fbank.shape[1])).add(res.fbank)
            frames += res.fbank.shape[0]
            seconds += res.duration
    wall = time.time() - t0
    summary = {
        "utterances": len(utts) - len(failures),
        "frames": frames,
        "audio_hours": round(seconds / 3600, 4),
        "speakers": len(speakers),
        "failed": len(failures),
        "failures": failures[:MAX_NAMED_FAILURES],
        "lost": tally((f["reason"], f["error"]) for f in failures),
        "wall_s": round(wall, 2),
        "x_real_time": round(seconds / wall, 1) if wall > 0 else None,
    }
    return summary, speakers


def _read_split_manifest(manifest: Path) -> list[Utterance]:
    if not manifest.exists():
        raise InputError(f"{manifest} is missing; run the prepare stage first")
    utts = read_manifest(manifest)
    if not utts:
        raise InputError(f"{manifest} has no utterances; check the corpus and the prepare stage")
    return utts


def compute_features(manifests: Mapping[str, Path], fbank_scps: Mapping[str, Path], mfcc_scps: Mapping[str, Path],
                     cmvn: Path, cfg: FeatureConfig, sample_rate: int = 16000) -> dict[str, Any]:
    """The features stage's work: fbank + MFCC ark/scp (``fbank_scps[split]``, ``mfcc_scps[split]``) of
    each split's manifest (``manifests``: split -> file), and the CMVN statistics (``cmvn``, global from
    train, or from the first split without one); returns the summary."""
    summary: dict[str, Any] = {"num_mel_bins": cfg.num_mel_bins, "num_ceps": cfg.num_ceps, "splits": {}}
    per_split: dict[str, dict[str, Stats]] = {}
    utterances = {split: _read_split_manifest(manifest) for split, manifest in manifests.items()}
    audio = sum(u.duration for utts in utterances.values() for u in utts)
    jobs = feature_jobs(cfg, audio)
    for split, utts in utterances.items():
        split_summary, per_split[split] = _features_split(utts, fbank_scps[split], mfcc_scps[split], split, cfg,
                                                          sample_rate, jobs)
        if split_summary["utterances"] == 0:
            raise InputError(f"no utterance of {manifests[split]} gave features; first failure: "
                             f"{split_summary['failures'][0]['error']}")
        log.info("features %s: %d utts, %d frames, %d failed, %.0fx real time", split,
                 split_summary["utterances"], split_summary["frames"], split_summary["failed"],
                 split_summary["x_real_time"] or math.nan)
        summary["splits"][split] = split_summary
    train = "train" if "train" in per_split else next(iter(per_split))
    global_stats = Stats.zeros(cfg.num_mel_bins)
    for s in per_split[train].values():
        global_stats.merge(s)
    write_cmvn(cmvn, global_stats, per_split)
    summary["cmvn_global_from"] = train
    summary["failed"] = sum(s["failed"] for s in summary["splits"].values())
    summary["frames"] = sum(s["frames"] for s in summary["splits"].values())
    return summary
