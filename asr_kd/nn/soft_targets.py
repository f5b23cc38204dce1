"""Stored sparse soft targets (``distill.targets=stored``): one pass of the frozen ensemble over the
training shards writes, per frame and per temperature T, the k most probable states of p_ens(T)
(ids and float16 probabilities); the rest of the mass is one tail bucket, ``1 - sum``. The
students then read them beside the feature shards instead of running the K teachers in every
step (:class:`asr_kd.nn.target_sources.StoredTargets` reads them; their soft term is
:func:`asr_kd.nn.losses.sparse_soft_cross_entropy`, inside the one ``distillation_loss``).

The pass (:func:`write_soft_targets`) writes one targets shard per training feature shard
(:mod:`asr_kd.data.targets`), atomically; every DDP rank writes shards ``rank, rank + world, ...``
and then waits for the others' receipts. A shard with a receipt of the current key is kept, so a
killed pass resumes at the first missing one; the key (:func:`targets_key`) holds the teachers'
model file hashes, the training shard index and the form (k, temperatures, ensemble mean, window,
precision), so a new teacher, new shards or another k make every shard stale and rewritten.

While it writes, the pass measures KL(dense || stored) on every frame, with the stored form read
as a distribution: the top k as stored, the tail mass spread evenly over the other N - k states.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr_kd.work import key as work_key
from asr_kd.data.shards import iter_shard, sample_key
from asr_kd.data.targets import index_dtype, read_receipt, target_shard, write_target_shard
from asr_kd.data.windows import utterance_windows
from asr_kd.fileio import file_sha256, read_json, write_json
from asr_kd.nn.ensemble import Ensemble, ensemble_probs
from asr_kd.nn.precision import inference_autocast
from asr_kd.progress import progress
from asr_kd.errors import InputError

log = logging.getLogger(__name__)

FORM = "topk+tail"
INDEX = "index.json"


def t_key(T: float) -> str:
    """The JSON key of a temperature (``2.0`` -> ``"2"``)."""
    return f"{T:g}"


def topk_targets(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) probabilities -> the k largest: ids (B, k) int64 and probabilities (B, k) float16."""
    q, idx = torch.topk(probs.float(), min(k, probs.shape[-1]), dim=-1)
    return idx, q.to(torch.float16)


def kl_to_dense(probs: torch.Tensor, idx: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-frame KL(dense || stored) (B,): the stored form as a distribution, the top k as
    stored and the tail mass ``1 - sum q`` spread evenly over the other N - k states. (float16
    rounding of q can make a frame's value slightly negative, by ~1e-4 at most.)"""
    p = probs.double()  # (B, N); float64: the sums of many small terms stay exact enough
    n, k = p.shape[-1], idx.shape[-1]
    q = q.double().clamp(min=1e-30)  # (B, k)
    p_top = p.gather(-1, idx)  # (B, k)
    kl_top = (torch.xlogy(p_top, p_top) - p_top * q.log()).sum(-1)  # (B,)
    if n == k:
        return kl_top
    p_tail = (1.0 - p_top.sum(-1)).clamp(min=0.0)  # (B,)
    neg_entropy_tail = torch.xlogy(p, p).sum(-1) - torch.xlogy(p_top, p_top).sum(-1)  # sum_tail p log p
    q_tail = (1.0 - q.sum(-1)).clamp(min=1e-30) / (n - k)  # (B,) per tail state
    return kl_top + neg_entropy_tail - p_tail * q_tail.log()


def targets_key(model_files: Sequence[str | Path], shard_index: dict[str, Any], *, k: int,
                temperatures: Sequence[float], mean: str, left: int, right: int, precision: str) -> str:
    """What the stored targets depend on: any change makes them stale."""
    blob = {"teachers": [file_sha256(f) for f in model_files], "shards": shard_index, "form": FORM, "k": k,
            "temperatures": [float(T) for T in temperatures], "mean": mean, "window": [left, right],
            "precision": precision}
    return work_key(blob)


def _utterance_chunks(url: str, left: int, right: int, batch_frames: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """The shard's utterances as lists of ``(key, windows (F, L+1+R, D))`` of about batch_frames frames."""
    chunk: list[tuple[str, torch.Tensor]] = []
    frames = 0
    for rec in iter_shard(url):
        w = utterance_windows(torch.from_numpy(rec.feats), left, right)  # (F, L+1+R, D) view
        chunk.append((sample_key(rec.id), w))
        frames += w.shape[0]
        if frames >= batch_frames:
            yield chunk
            chunk, frames = [], 0
    if chunk:
        yield chunk


@torch.no_grad()
def _shard_targets(ens: Ensemble, url: str, temperatures: Sequence[float], k: int, *, left: int, right: int,
                   device: torch.device, precision: str, batch_frames: int, stats: dict[str, Any],
                   dtype: np.dtype) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(key, idx (nT, F, k), prob (nT, F, k))`` for every utterance of a feature shard, in order;
    adds frames and KL sums to ``stats``."""
    for chunk in _utterance_chunks(url, left, right, batch_frames):
        x = torch.cat([w for _, w in chunk]).to(device)  # (B, L+1+R, D)
        with inference_autocast(device, precision):
            logits = ens(x).float()  # (K, B, N)
        idx_t, prob_t = [], []
        for T in temperatures:
            p = ensemble_probs(logits, T, ens.mean)  # (B, N)
            idx, q = topk_targets(p, k)
            stats["kl_sum"][t_key(T)] += float(kl_to_dense(p, idx, q).double().sum())
            idx_t.append(idx.cpu().numpy().astype(dtype))
            prob_t.append(q.cpu().numpy())
        idx_all, prob_all = np.stack(idx_t), np.stack(prob_t)  # (nT, B, k)
        stats["frames"] += x.shape[0]
        stats["utterances"] += len(chunk)
        pos = 0
        for key, w in chunk:
            n = w.shape[0]
            yield key, idx_all[:, pos : pos + n], prob_all[:, pos : pos + n]
            pos += n


def write_soft_targets(ens: Ensemble, feature_urls: Sequence[str], out_dir: Path, *, key: str,
                       temperatures: Sequence[float], k: int, left: int, right: int, device: torch.device,
                       precision: str = "auto", batch_frames: int = 4096, rank: int = 0, world: int = 1,
                       wait_s: float = 24 * 3600.0) -> dict[str, Any]:
    """Write (or keep, when current) the targets shard of every training feature shard; returns
    the targets' index (also written to ``out_dir/index.json``), see :func:`targets_summary`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    temperatures = [float(T) for T in temperatures]
    dtype = index_dtype(ens.num_pdfs)
    shards = [target_shard(out_dir, u) for u in feature_urls]
    written = kept = 0
    t0 = time.perf_counter()
    was_training = ens.training
    ens.to(device).eval()
    mine = [i for i in range(len(shards)) if i % world == rank]
    for i in progress(mine, desc="soft targets", unit="shard", leave=False):
        receipt = read_receipt(shards[i])
        if receipt is not None and receipt.get("key") == key:
            kept += 1
            continue
        stats: dict[str, Any] = {"key": key, "frames": 0, "utterances": 0,
                                 "kl_sum": {t_key(T): 0.0 for T in temperatures}}  # filled as samples are written
        samples = _shard_targets(ens, feature_urls[i], temperatures, k, left=left, right=right, device=device,
                                 precision=precision, batch_frames=batch_frames, stats=stats, dtype=dtype)
        write_target_shard(shards[i], samples, stats)
        written += 1
    ens.train(was_training)
    receipts = _wait_for_receipts(shards, key, wait_s)
    index = targets_summary(receipts, shards, key=key, k=k, temperatures=temperatures, num_pdfs=ens.num_pdfs,
                            dtype=dtype)
    index.update(shards_written=written, shards_kept=kept, write_s=round(time.perf_counter() - t0, 3))
    _remove_stale(out_dir, {s.name for s in shards})
    if rank == 0:
        write_json(out_dir / INDEX, index)
    log.info("soft targets: %d shards written, %d kept (%s, k=%d, %.0f bytes/frame, KL to dense %s)", written, kept,
             FORM, k, index["bytes_per_frame"], index["kl_to_dense"])
    return index


def _wait_for_receipts(shards: Sequence[Path], key: str, wait_s: float) -> list[dict[str, Any]]:
    """Every shard's current receipt, waiting for those other ranks write."""
    deadline = time.monotonic() + wait_s
    while True:
        receipts = [read_receipt(s) for s in shards]
        missing = [s for s, r in zip(shards, receipts) if r is None or r.get("key") != key]
        if not missing:
            return receipts  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise InputError(f"soft targets: {len(missing)} shards (first {missing[0]}) were not written by the "
                             f"other ranks within {wait_s:.0f} s; re-run the distill stage")
        time.sleep(1.0)


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    for old in out_dir.glob("shard-*.tar"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)


def targets_summary(receipts: Sequence[dict[str, Any]], shards: Sequence[Path], *, key: str, k: int,
                    temperatures: Sequence[float], num_pdfs: int, dtype: np.dtype) -> dict[str, Any]:
    """The targets' index: form, k, bytes per frame (on disk, and the arrays alone), mean KL per T."""
    frames = sum(r["frames"] for r in receipts)
    size = sum(r["bytes"] for r in receipts)
    kl = {t_key(T): sum(r["kl_sum"][t_key(T)] for r in receipts) / max(frames, 1) for T in temperatures}
    payload = len(temperatures) * min(k, num_pdfs) * (dtype.itemsize + 2)
    return {"mode": "stored", "form": FORM, "k": k, "temperatures": list(temperatures), "num_pdfs": num_pdfs,
            "index_dtype": dtype.name, "prob_dtype": "float16", "key": key, "shards": len(shards),
            "utterances": sum(r["utterances"] for r in receipts), "frames": frames, "bytes": size,
            "bytes_per_frame": size / max(frames, 1), "payload_bytes_per_frame": payload,
            "kl_to_dense": kl}


def read_targets_index(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / INDEX
    return read_json(path) if path.exists() else None


def projected_bytes(payload_bytes_per_frame: float, frames: float = 360e6) -> float:
    """Storage of the arrays for ``frames`` frames (default: LibriSpeech 960 h at 100 frames/s)."""
    return payload_bytes_per_frame * frames if math.isfinite(payload_bytes_per_frame) else math.nan
