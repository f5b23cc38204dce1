"""Tiny learnable window data and configs shared by the training tests (and the resume/DDP scripts).

Two forms of the same kind of data: :func:`tiny_datamodule` (in-memory tensors, for unit tests of
the Lightning systems) and :func:`write_tiny_shards` (a run directory's shards, read through the
production loader :func:`asr_kd.data.datamodule.shard_datamodule`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from asr_kd.config import TrainConfig
from asr_kd.data.datamodule import FrameDataModule
from asr_kd.data.manifest import Utterance
from asr_kd.data.shards import ShardWriter, encode_sample
from asr_kd.fileio import write_json
from asr_kd.paths import SPLITS, RunPaths

NUM_PDFS = 6
PROJ_SEED = 123


def _labels(frames: torch.Tensor) -> torch.Tensor:
    """A fixed random linear map of each frame, argmax: what the tiny networks learn."""
    proj = torch.randn(40, NUM_PDFS, generator=torch.Generator().manual_seed(PROJ_SEED))
    return (frames @ proj).argmax(-1)


def window_data(n: int, seed: int) -> TensorDataset:
    """(n, 26, 40) windows labelled by a fixed random linear map of their 21st frame (plus small noise)."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 26, 40, generator=gen)
    x[:, 20] *= 10.0 / 3.0
    return TensorDataset(x, _labels(x[:, 20]))


def tiny_datamodule(batch_size: int = 32, n_train: int = 512, seed: int = 0) -> FrameDataModule:
    return FrameDataModule(window_data(n_train, 1), window_data(128, 2), window_data(128, 3),
                           batch_size=batch_size, seed=seed)


def write_tiny_shards(root: Path, utts: dict[str, int] | None = None, frames_per_utt: int = 32) -> RunPaths:
    """A run directory ``root`` with only the shards stage's output: per split ``utts[split]``
    utterances of ``frames_per_utt`` random 40-dim frames, each labelled by :func:`_labels`."""
    paths = RunPaths(root)
    counts = utts or {"train": 16, "dev": 4, "test": 4}
    for s, split in enumerate(SPLITS):
        gen = torch.Generator().manual_seed(100 + s)
        writer = ShardWriter(paths.shard_dir(split), max_utts=4)
        for i in range(counts[split]):
            feats = torch.randn(frames_per_utt, 40, generator=gen)  # (T, 40)
            utt = Utterance(id=f"{split}-{i:03d}", speaker=f"{split}-spk", chapter="0", audio="", text="",
                            num_samples=0, sample_rate=16000)
            sample = encode_sample(utt, feats.numpy().astype(np.float32), _labels(feats).numpy())
            writer.add(sample, frames_per_utt)
        writer.flush()
        write_json(paths.shard_index(split), {
            "split": split, "feature_dim": 40, "num_pdfs": NUM_PDFS, "has_labels": True,
            "utterances": counts[split], "frames": counts[split] * frames_per_utt, "shards": writer.shards,
        })
    return paths


def tiny_train_config(**kw) -> TrainConfig:
    # fp32: these runs are compared with each other (stacked vs separate members, DDP vs one process,
    # resumed vs uninterrupted), equalities that bf16 kernels only approximate (and differently per CPU:
    # AVX512-BF16 vs AMX). The recipe tests run the presets' precision ("auto": bf16 where the CPU has it).
    base = TrainConfig(optimizer="adam", lr=3e-3, warmup_steps=5, lr_schedule="cosine", batch_size=32,
                       max_epochs=3, accelerator="cpu", devices="1", log_every_n_steps=5, seed=0,
                       precision="32-true")
    return dataclasses.replace(base, **kw)
