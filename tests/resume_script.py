"""Train a tiny teacher in RUN_DIR (resuming from its last.ckpt); used by test_resume and test_ddp.

python -m tests.resume_script RUN_DIR [--slow SECONDS] [--devices N] [--batch-size B]
Writes RUN_DIR/steps.txt (global step after each batch) so a test can kill it mid-epoch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L

from asr_kd.fileio import write_json
from asr_kd.models import AcousticDNN
from asr_kd.systems import TeacherSystem
from asr_kd.train import train_run
from tests.train_helpers import NUM_PDFS, tiny_datamodule, tiny_train_config


class StepLog(L.Callback):
    def __init__(self, path: Path, slow: float) -> None:
        self.path, self.slow = path, slow

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank == 0:
            with open(self.path, "a") as f:
                f.write(f"{trainer.global_step}\n")
        time.sleep(self.slow)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--slow", type=float, default=0.0)
    p.add_argument("--devices", default="1")
    p.add_argument("--strategy", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    cfg = tiny_train_config(max_epochs=args.epochs, checkpoint_every_n_steps=5, devices=args.devices,
                            strategy=args.strategy, batch_size=args.batch_size)
    system = TeacherSystem(AcousticDNN(hidden_layers=2, hidden_dim=32, num_pdfs=NUM_PDFS, seed=0), cfg,
                           max_epochs=args.epochs, run_config={"test": "resume"})
    args.run_dir.mkdir(parents=True, exist_ok=True)
    import asr_kd.train as train_mod

    original = train_mod.build_trainer

    def with_steplog(*a, **kw):
        return original(*a, **kw, extra_callbacks=(StepLog(args.run_dir / "steps.txt", args.slow),))

    train_mod.build_trainer = with_steplog
    metrics = train_run(system, tiny_datamodule(batch_size=args.batch_size), cfg, args.run_dir, key="resume",
                        max_epochs=args.epochs, progress_bar=False)
    if L.fabric.utilities.rank_zero.rank_zero_only.rank == 0:
        write_json(args.run_dir / "final.json", metrics)


if __name__ == "__main__":
    main()
