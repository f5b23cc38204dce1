"""Tiny learnable window data and configs shared by the training tests (and the resume/DDP scripts)."""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import TensorDataset

from asr_kd.config import TrainConfig
from asr_kd.data import FrameDataModule

NUM_PDFS = 6


def window_data(n: int, seed: int) -> TensorDataset:
    """(n, 26, 40) windows labelled by a fixed random linear map of their 21st frame (plus small noise)."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 26, 40, generator=gen)
    x[:, 20] *= 10.0 / 3.0
    proj = torch.randn(40, NUM_PDFS, generator=torch.Generator().manual_seed(123))
    y = (x[:, 20] @ proj).argmax(-1)
    return TensorDataset(x, y)


def tiny_datamodule(batch_size: int = 32, n_train: int = 512, seed: int = 0) -> FrameDataModule:
    return FrameDataModule(window_data(n_train, 1), window_data(128, 2), window_data(128, 3),
                           batch_size=batch_size, seed=seed)


def tiny_train_config(**kw) -> TrainConfig:
    base = TrainConfig(optimizer="adam", lr=3e-3, warmup_steps=5, lr_schedule="cosine", batch_size=32,
                       max_epochs=3, accelerator="cpu", devices="1", log_every_n_steps=5, seed=0)
    return dataclasses.replace(base, **kw)
