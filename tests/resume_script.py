"""Train a tiny teacher in RUN_DIR (resuming from its last.ckpt) on the shards in SHARDS_DIR, through
the production loader (``shard_datamodule``, streamed windows); used by test_resume and test_ddp.

python -m tests.resume_script RUN_DIR SHARDS_DIR [--slow SECONDS] [--devices N] [--batch-size B]
                                                 [--merge-ranks W]
Writes RUN_DIR/steps.txt (global step after each batch) so a test can kill it mid-epoch.
``--merge-ranks W``: one process trains on the batches W DDP ranks would read, concatenated per
step (the DDP global batch), to compare with a W-process DDP run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import IterableDataset

from asr_kd.config import ModelConfig
from asr_kd.data.datamodule import FrameDataModule, shard_datamodule
from asr_kd.data.shards import shard_urls
from asr_kd.data.windows import FrameWindowDataset
from asr_kd.fileio import write_json
from asr_kd.nn.models import AcousticDNN
from asr_kd.nn.systems import TeacherSystem
from asr_kd.nn.train import train_run
from asr_kd.paths import RunPaths
from tests.train_helpers import NUM_PDFS, tiny_train_config


class StepLog(L.Callback):
    def __init__(self, path: Path, slow: float) -> None:
        self.path, self.slow = path, slow

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank == 0:
            with open(self.path, "a") as f:
                f.write(f"{trainer.global_step}\n")
        time.sleep(self.slow)


class MergedRanks(IterableDataset):
    """Per step, the batches of ranks 0..W-1 concatenated: what one DDP step trains on, in one process."""

    def __init__(self, parts: list[FrameWindowDataset]) -> None:
        self.parts = parts

    def set_epoch(self, epoch: int) -> None:
        for p in self.parts:
            p.set_epoch(epoch)

    def __len__(self) -> int:
        return min(len(p) for p in self.parts)

    def __iter__(self):
        for batches in zip(*self.parts):
            yield torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def merged_datamodule(paths: RunPaths, model: ModelConfig, train, world: int) -> FrameDataModule:
    dm = shard_datamodule(paths.shard_indexes(), model, train)
    urls = shard_urls(paths.shard_index("train"))
    parts = [FrameWindowDataset(urls, left=model.left_context, right=model.right_context,
                                batch_size=train.batch_size // world, seed=train.seed,
                                shuffle_buffer_utts=train.shuffle_buffer_utts, shuffle=True,
                                equal_batches_per_rank=True, rank=r, world_size=world) for r in range(world)]
    return FrameDataModule(MergedRanks(parts), dm.dev_set, dm.test_set, batch_size=train.batch_size,
                           seed=train.seed, eval_builder=dm.eval_builder)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("shards_dir", type=Path, help="a run directory holding the shards stage's output")
    p.add_argument("--slow", type=float, default=0.0)
    p.add_argument("--devices", default="1")
    p.add_argument("--strategy", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--merge-ranks", type=int, default=0)
    args = p.parse_args()
    # in_memory_max_frames=0: the streamed FrameWindowDataset of large corpora
    cfg = tiny_train_config(max_epochs=args.epochs, checkpoint_every_n_steps=5, devices=args.devices,
                            strategy=args.strategy, batch_size=args.batch_size, in_memory_max_frames=0)
    model = ModelConfig(hidden_layers=2, hidden_dim=32)
    system = TeacherSystem(AcousticDNN(hidden_layers=2, hidden_dim=32, num_pdfs=NUM_PDFS, seed=0), cfg,
                           max_epochs=args.epochs, run_config={"test": "resume"})
    args.run_dir.mkdir(parents=True, exist_ok=True)
    import asr_kd.nn.train as train_mod

    original = train_mod.build_trainer

    def with_steplog(*a, **kw):
        return original(*a, **kw, extra_callbacks=(StepLog(args.run_dir / "steps.txt", args.slow),))

    train_mod.build_trainer = with_steplog
    shards = RunPaths(args.shards_dir)
    if args.merge_ranks:
        dm = merged_datamodule(shards, model, cfg, args.merge_ranks)
    else:
        dm = shard_datamodule(shards.shard_indexes(), model, cfg)
    metrics = train_run(system, dm, cfg, args.run_dir, key="resume", max_epochs=args.epochs, progress_bar=False)
    if L.fabric.utilities.rank_zero.rank_zero_only.rank == 0:
        write_json(args.run_dir / "final.json", metrics)


if __name__ == "__main__":
    main()
