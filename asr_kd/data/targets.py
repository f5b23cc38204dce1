"""Stored soft targets on disk: webdataset shards of the ensemble's sparse per-frame targets, one
per training feature shard (the same file name, the same sample keys in the same order), read
beside the feature shards by the window datasets (:mod:`asr_kd.data.windows`).

Each sample of ``distill/targets/shard-NNNNNN.tar``, for the utterance key ``K``::

    K.soft_idx.npy    (len(T), frames, k) int16 (int32 when N > 32767): the k most probable states, per T
    K.soft_prob.npy   (len(T), frames, k) float16: their probabilities p_ens(T); the tail bucket
                      holds the rest, 1 - their sum

Beside each shard, ``shard-NNNNNN.json`` is its receipt: the key of the targets (teachers,
training shards, form, k, temperatures; see :mod:`asr_kd.nn.soft_targets`), its frame count and
KL sums. A shard counts as written only with a receipt of the current key, so a killed pass
resumes at the first shard without one, and a changed key rewrites them all. ``index.json``
describes the complete set (written once every shard is).
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from asr_kd.fileio import atomic_path, read_json, write_json
from asr_kd.errors import InputError

IDX_MEMBER, PROB_MEMBER = "soft_idx.npy", "soft_prob.npy"


def target_shard(targets_dir: str | os.PathLike, feature_url: str | os.PathLike) -> Path:
    """The targets shard of a training feature shard: the same file name under ``targets_dir``."""
    return Path(targets_dir) / Path(feature_url).name


def receipt_path(shard: Path) -> Path:
    return shard.with_suffix(".json")


def index_dtype(num_pdfs: int) -> np.dtype:
    """int16 state ids when they fit, else int32."""
    return np.dtype(np.int16 if num_pdfs <= np.iinfo(np.int16).max + 1 else np.int32)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_target_shard(path: Path, samples: Iterable[tuple[str, np.ndarray, np.ndarray]],
                       receipt: dict[str, Any]) -> int:
    """Write ``(key, idx (nT, F, k), prob (nT, F, k))`` samples as one tar, atomically, then its
    receipt (``receipt`` as it is once every sample is written, plus the shard's bytes); returns
    the shard's size in bytes."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer = wds.TarWriter(f, encoder=False, mtime=0.0)
        for key, idx, prob in samples:
            writer.write({"__key__": key, IDX_MEMBER: _npy(idx), PROB_MEMBER: _npy(prob)})
        writer.close()
    size = path.stat().st_size
    write_json(receipt_path(path), {**receipt, "bytes": size})
    return size


def read_receipt(shard: Path) -> dict[str, Any] | None:
    """The receipt of a written shard, None if the shard or its receipt is missing."""
    r = receipt_path(shard)
    return read_json(r) if r.exists() and shard.exists() else None


def iter_target_shard(url: str | os.PathLike, keys: set[str] | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(key, idx (nT, F, k), prob (nT, F, k))`` of a targets shard in stored order (only ``keys``)."""
    from asr_kd.data.shards import tar_samples

    try:
        for key, members in tar_samples(url, keys):
            yield _decode(url, key, members)
    except (tarfile.TarError, FileNotFoundError) as e:
        raise InputError(f"{url}: not a readable soft-targets shard ({e}); delete it and re-run the distill "
                         "stage (--force distill), which rewrites it") from e


def _decode(url: str | os.PathLike, key: str, members: dict[str, bytes]) -> tuple[str, np.ndarray, np.ndarray]:
    if IDX_MEMBER not in members or PROB_MEMBER not in members:
        raise InputError(f"{url}: sample {key!r} lacks {IDX_MEMBER} or {PROB_MEMBER}; delete the shard and "
                         "re-run the distill stage")
    idx = np.load(io.BytesIO(members[IDX_MEMBER]), allow_pickle=False)
    prob = np.load(io.BytesIO(members[PROB_MEMBER]), allow_pickle=False)
    return key, idx, prob


def aligned_targets(records: Iterable[Any], target_url: str | os.PathLike,
                    keys: set[str] | None) -> Iterator[Any]:
    """The feature shard's records (``asr_kd.data.shards.UttRecord``, read with ``keys``) with their
    stored targets attached (``record.targets = (idx, prob)``), checking that keys and frame
    counts match one to one."""
    from asr_kd.data.shards import sample_key

    targets = iter_target_shard(target_url, keys)
    for rec in records:
        key = sample_key(rec.id)
        got = next(targets, None)
        if got is None or got[0] != key or got[1].shape[1] != rec.feats.shape[0]:
            found = "nothing" if got is None else f"{got[0]!r} ({got[1].shape[1]} frames)"
            raise InputError(f"{target_url}: expected the targets of {key!r} ({rec.feats.shape[0]} frames), found "
                             f"{found}: the targets do not match the training shards; re-run the distill stage "
                             "(--force distill), which rewrites stale targets")
        rec.targets = (got[1], got[2])
        yield rec
