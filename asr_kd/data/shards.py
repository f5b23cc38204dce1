"""Webdataset tar shards of normalised features and per-frame labels: the writer (the shards
stage's work, :func:`write_shards`) and the reader (:func:`read_index`, :func:`iter_utterances`).

One sample per utterance. Each sample's members, for utterance ``103-1240-0000``::

    103-1240-0000.feats.npy    (T, 40) CMVN-normalised fbank, features.storage_dtype
    103-1240-0000.labels.npy   (T,) int32 HMM-state (pdf) ids; only when the split has alignments
    103-1240-0000.txt          the transcript
    103-1240-0000.json         {"id", "speaker", "num_frames", "feature_dim", "has_labels"}

Webdataset splits a member name at the first dot of its base name, so a key must not contain a
dot: :func:`sample_key` replaces dots by underscores; the json keeps the real id.

``shards/<split>/index.json`` lists the shards (names relative to the index), their utterances
with frame counts (``[[id, frames], ...]``), totals, the feature dimension and ``num_pdfs``
(from the align stage). Utterances without an alignment, and those whose label count differs
from their frame count, are skipped, named in the log and counted in the index and summary.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from asr_kd.accounting import tally
from asr_kd.config import FeatureConfig, ShardConfig
from asr_kd.data.features import CmvnStats, apply_cmvn, load_cmvn
from asr_kd.data.manifest import Utterance, read_manifest
from asr_kd.data.scp import load_scp
from asr_kd.errors import InputError
from asr_kd.fileio import atomic_path, read_json, write_json
from asr_kd.files import SHARD_FILE, SHARD_INDEX
from asr_kd.progress import progress

log = logging.getLogger(__name__)

MAX_NAMED_SKIPS = 50


def sample_key(utt_id: str) -> str:
    """The webdataset key of an utterance (no dots: webdataset splits names at the first dot)."""
    return utt_id.replace(".", "_")


def encode_sample(utt: Utterance, feats: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """The tar members of one utterance as bytes (see the module docstring)."""
    meta = {"id": utt.id, "speaker": utt.speaker, "num_frames": int(feats.shape[0]),
            "feature_dim": int(feats.shape[1]), "has_labels": labels is not None}
    sample: dict[str, Any] = {"__key__": sample_key(utt.id), "feats.npy": _npy_bytes(feats),
                              "txt": utt.text.encode(), "json": json.dumps(meta).encode()}
    if labels is not None:
        sample["labels.npy"] = _npy_bytes(labels.astype(np.int32))
    return sample


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class ShardWriter:
    """Writes samples to ``shard-NNNNNN.tar`` files of at most ``max_utts`` utterances, atomically."""

    def __init__(self, out_dir: Path, max_utts: int) -> None:
        if max_utts < 1:
            raise ValueError(f"shards.max_utts_per_shard must be >= 1, got {max_utts}")
        self.out_dir = Path(out_dir)
        self.max_utts = max_utts
        self.shards: list[dict[str, Any]] = []
        self._pending: list[tuple[dict[str, Any], int]] = []

    def add(self, sample: dict[str, Any], frames: int) -> None:
        self._pending.append((sample, frames))
        if len(self._pending) >= self.max_utts:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        name = SHARD_FILE.format(len(self.shards))
        keys: set[str] = set()
        with atomic_path(self.out_dir / name) as tmp, open(tmp, "wb") as f:
            writer = wds.TarWriter(f, encoder=False, mtime=0.0)
            for sample, _ in self._pending:
                if sample["__key__"] in keys:
                    raise ValueError(f"two utterances share the shard key {sample['__key__']!r}")
                keys.add(sample["__key__"])
                writer.write(sample)
            writer.close()
        utts = [[json.loads(s["json"])["id"], n] for s, n in self._pending]
        self.shards.append({"file": name, "utterances": len(utts), "frames": sum(n for _, n in utts),
                            "utts": utts})
        self._pending = []


@dataclass(frozen=True)
class SplitFiles:
    """What one split's shards are made of, and where they go."""

    manifest: Path  # the split's utterances (asr_kd.data.manifest)
    fbank_scp: Path  # their raw fbank
    pdf_scp: Path  # their pdf-id labels (absent: shards without labels)
    out_dir: Path  # the shards and their index (SHARD_INDEX)


def _load_labels(scp: Path, split: str) -> dict[str, np.ndarray] | None:
    if not scp.exists():
        log.warning("%s is missing: %s shards get no labels", scp, split)
        return None
    return dict(load_scp(scp))


def _check_labels(utt_id: str, labels: np.ndarray, num_pdfs: int | None, scp: Path) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if labels.size and (labels.min() < 0 or (num_pdfs is not None and labels.max() >= num_pdfs)):
        raise InputError(f"{scp}: labels of {utt_id} outside [0, {num_pdfs}); re-run the align stage")
    return labels.astype(np.int32)


def write_split(split: str, files: SplitFiles, cmvn_path: Path, feature_cfg: FeatureConfig, shard_cfg: ShardConfig,
                num_pdfs: int | None) -> dict[str, Any]:
    """Shards + index.json of one split (normalised with the CMVN statistics at ``cmvn_path``; labels
    checked against ``num_pdfs`` when known); returns the split's summary."""
    utts = read_manifest(files.manifest)
    feats_scp = files.fbank_scp
    if not feats_scp.exists():
        raise InputError(f"{feats_scp} is missing; run the features stage first")
    feats = load_scp(feats_scp)
    cmvn = load_cmvn(cmvn_path, split)
    labels = _load_labels(files.pdf_scp, split)
    out = ShardWriter(files.out_dir, shard_cfg.max_utts_per_shard)
    skipped: dict[str, list[str]] = {"no_features": [], "no_alignment": [], "length_mismatch": []}
    dtype = np.dtype(feature_cfg.storage_dtype)
    for utt in progress(utts, desc=f"shards {split}", unit="utt", leave=False):
        sample = _sample(utt, feats, cmvn, labels, feature_cfg, dtype, num_pdfs, files.pdf_scp, skipped)
        if sample is not None:
            out.add(*sample)
    out.flush()
    if not out.shards:
        raise InputError(f"no utterance of split {split} could be sharded: {_skip_counts(skipped)}")
    _remove_stale_shards(files.out_dir, {s["file"] for s in out.shards})
    index = {
        "split": split,
        "feature_dim": feature_cfg.num_mel_bins,
        "dtype": feature_cfg.storage_dtype,
        "cmvn": feature_cfg.cmvn,
        "has_labels": labels is not None,
        "num_pdfs": num_pdfs,
        "utterances": sum(s["utterances"] for s in out.shards),
        "frames": sum(s["frames"] for s in out.shards),
        "skipped": _skip_counts(skipped),
        "skipped_utts": {k: v[:MAX_NAMED_SKIPS] for k, v in skipped.items() if v},
        "shards": out.shards,
    }
    write_json(files.out_dir / SHARD_INDEX, index)
    # Only length mismatches are this stage's own losses: no_features / no_alignment were counted
    # by the features and align stages (asr_kd.accounting).
    lost = tally(("length_mismatch", u) for u in skipped["length_mismatch"])
    return {k: v for k, v in index.items() if k != "shards"} | {"shards": len(out.shards), "lost": lost}


def _sample(utt: Utterance, feats: Any, cmvn: CmvnStats, labels: dict[str, np.ndarray] | None,
            cfg: FeatureConfig, dtype: np.dtype, num_pdfs: int | None, pdf_scp: Path,
            skipped: dict[str, list[str]]) -> tuple[dict[str, Any], int] | None:
    """One utterance's encoded sample and frame count, or None (the reason recorded in ``skipped``)."""
    if utt.id not in feats:
        skipped["no_features"].append(utt.id)  # already named by the features stage
        return None
    x = apply_cmvn(np.asarray(feats[utt.id]), utt.speaker, cmvn, cfg.cmvn).astype(dtype)  # (T, D)
    y = None
    if labels is not None:
        if utt.id not in labels:
            log.warning("%s: no alignment in %s, skipped", utt.id, pdf_scp)
            skipped["no_alignment"].append(utt.id)
            return None
        y = _check_labels(utt.id, labels[utt.id], num_pdfs, pdf_scp)  # (T,)
        if y.shape[0] != x.shape[0]:
            log.warning("%s: %d labels in %s but %d feature frames, skipped", utt.id, y.shape[0],
                        pdf_scp, x.shape[0])
            skipped["length_mismatch"].append(f"{utt.id} (labels {y.shape[0]}, frames {x.shape[0]})")
            return None
    return encode_sample(utt, x, y), int(x.shape[0])


def _skip_counts(skipped: dict[str, list[str]]) -> dict[str, int]:
    return {k: len(v) for k, v in skipped.items()}


def _remove_stale_shards(out_dir: Path, keep: set[str]) -> None:
    for old in out_dir.glob("shard-*.tar"):
        if old.name not in keep:
            old.unlink()


def write_shards(splits: Mapping[str, SplitFiles], cmvn_path: Path, num_pdfs: int | None, feature_cfg: FeatureConfig,
                 shard_cfg: ShardConfig) -> dict[str, Any]:
    """The shards stage's work: shards and index.json for every split of ``splits``; returns the
    stage summary. ``num_pdfs``: the aligner's (labels outside it are an error), None when unknown."""
    summary: dict[str, Any] = {"num_pdfs": num_pdfs, "splits": {}}
    for split, files in splits.items():
        summary["splits"][split] = write_split(split, files, cmvn_path, feature_cfg, shard_cfg, num_pdfs)
        s = summary["splits"][split]
        log.info("shards %s: %d utts, %d frames in %d shards, skipped %s", split, s["utterances"],
                 s["frames"], s["shards"], s["skipped"])
    summary["skipped"] = {k: sum(s["skipped"][k] for s in summary["splits"].values())
                          for k in ("no_features", "no_alignment", "length_mismatch")}
    return summary


# ---------------------------------------------------------------------------------------------
# Reading shards (the datasets of asr_kd.data.windows, the decode stage)
# ---------------------------------------------------------------------------------------------
@dataclass
class UttRecord:
    id: str
    feats: np.ndarray  # (T, D) float32 (or the storage dtype inside the datasets)
    labels: np.ndarray | None  # (T,) int64, None when the split has no alignments
    text: str
    meta: dict[str, Any] = field(default_factory=dict)
    # Stored soft targets (idx, prob), each (len(T), T, k), when read beside targets shards
    # (asr_kd.data.targets.aligned_targets).
    targets: tuple[np.ndarray, np.ndarray] | None = None


def read_index(index_path: str | os.PathLike) -> dict[str, Any]:
    """A split's ``index.json`` (see :mod:`asr_kd.data.shards`)."""
    path = Path(index_path)
    if not path.exists():
        raise InputError(f"{path} is missing; run the shards stage first")
    return read_json(path)


def shard_urls(index_path: str | os.PathLike) -> list[str]:
    """Absolute paths of a split's shards, in index order."""
    index = read_index(index_path)
    root = Path(index_path).resolve().parent
    return [str(root / s["file"]) for s in index["shards"]]


def tar_samples(url: str | os.PathLike, keys: set[str] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {extension: bytes})`` per sample of a webdataset tar, in stored order; with ``keys``,
    only those (the others are read past). Raises ``tarfile.TarError`` / ``OSError`` for the caller
    to name."""
    members: dict[str, bytes] = {}
    current = None
    with tarfile.open(url, "r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, _, ext = os.path.basename(info.name).partition(".")
            if key != current:
                if current is not None and members:
                    yield current, members
                current, members = key, {}
            if keys is None or key in keys:
                f = tar.extractfile(info)
                assert f is not None
                members[ext] = f.read()
        if current is not None and members:
            yield current, members


def iter_shard(url: str, keys: set[str] | None = None, float32: bool = True) -> Iterator[UttRecord]:
    """Samples of one tar shard in stored order; with ``keys``, only those (others are seeked past)."""
    try:
        for key, members in tar_samples(url, keys):
            yield _decode_sample(url, key, members, float32)
    except tarfile.TarError as e:
        raise InputError(f"{url}: not a readable tar shard ({e}); re-run the shards stage") from e


def _decode_sample(url: str, key: str, members: dict[str, bytes], float32: bool) -> UttRecord:
    if "feats.npy" not in members or "json" not in members:
        raise InputError(f"{url}: sample {key!r} lacks feats.npy or json; re-run the shards stage")
    meta = json.loads(members["json"])
    feats = np.load(io.BytesIO(members["feats.npy"]), allow_pickle=False)  # (T, D)
    labels = None
    if "labels.npy" in members:
        labels = np.load(io.BytesIO(members["labels.npy"]), allow_pickle=False).astype(np.int64)  # (T,)
    if float32:
        feats = feats.astype(np.float32, copy=False)
    return UttRecord(meta.get("id", key), feats, labels, members.get("txt", b"").decode(), meta)


def iter_utterances(urls: list[str]) -> Iterator[UttRecord]:
    """Every utterance of the shards, in order, with float32 features."""
    for url in urls:
        yield from iter_shard(url)
