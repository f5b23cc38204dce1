"""The LR schedule as a Lightning-stepped scheduler: the rate of every step is the one the code before
it set by hand (recorded in lr_schedule_before.json), and a run resumed mid-epoch (from a checkpoint of
this code or of the old one, with its hand-saved newbob extras) continues with the same rates."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from asr_kd.nn.models import AcousticDNN
from asr_kd.nn.systems import TeacherSystem
from tests.train_helpers import NUM_PDFS, tiny_datamodule, tiny_train_config

# The rates per optimiser step recorded with the code of 892c86d (LR written into param_groups at
# each batch start): 2 x 16 steps of cosine (planned steps from the trainer, or steps_per_epoch),
# 4 x 16 of newbob (SGD; halving from the second epoch on), 16 of constant, each after a warm-up.
BEFORE = json.loads((Path(__file__).parent / "lr_schedule_before.json").read_text())


class LRLog(L.Callback):
    def __init__(self, save_at: int = 0, path: Path | None = None) -> None:
        self.lrs: list[float] = []
        self.save_at, self.path = save_at, path

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.save_at and trainer.global_step == self.save_at:
            trainer.save_checkpoint(self.path)


def _fit(case: dict, ckpt: Path | None = None, log: LRLog | None = None) -> list[float]:
    kw = dict(case)
    epochs, spe = kw.pop("max_epochs"), kw.pop("steps_per_epoch", 0)
    L.seed_everything(0, verbose=False)
    system = TeacherSystem(AcousticDNN(hidden_layers=2, hidden_dim=32, num_pdfs=NUM_PDFS, seed=0),
                           tiny_train_config(max_epochs=epochs, **kw), steps_per_epoch=spe, max_epochs=epochs)
    log = log or LRLog()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
                        callbacks=[log], enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(system, datamodule=tiny_datamodule(), ckpt_path=str(ckpt) if ckpt else None)
    return log.lrs


@pytest.mark.parametrize("name", sorted(BEFORE["cases"]))
def test_the_rate_of_every_step_is_the_one_before(name):
    assert _fit(BEFORE["cases"][name]) == pytest.approx(BEFORE["lrs"][name], rel=1e-12, abs=0)


def test_newbob_resumes_mid_epoch_with_its_rate_and_state_also_from_an_old_checkpoint(tmp_path):
    case, want = BEFORE["cases"]["newbob"], BEFORE["lrs"]["newbob"]
    ckpt = tmp_path / "step40.ckpt"
    assert _fit(case, log=LRLog(save_at=40, path=ckpt)) == pytest.approx(want, rel=1e-12, abs=0)
    state = torch.load(ckpt, weights_only=False)
    sched = state["lr_schedulers"][0]
    assert sched["last_epoch"] == 40 and (sched["scale"], sched["halving"]) == (0.5, True)  # epoch 2 of 4
    assert "newbob" not in state["asr_kd"]
    assert _fit(case, ckpt) == pytest.approx(want[40:], rel=1e-12, abs=0)

    # The same checkpoint as the old code wrote it: no scheduler, the newbob state in the extras, and
    # the optimiser holding the rate of the step before.
    old = dict(state, lr_schedulers=[])
    old["asr_kd"] = dict(state["asr_kd"], newbob={"scale": sched["scale"], "halving": sched["halving"],
                                                  "best": sched["best"]})
    for group in old["optimizer_states"][0]["param_groups"]:
        group["lr"] = want[39]
    torch.save(old, tmp_path / "old.ckpt")
    assert _fit(case, tmp_path / "old.ckpt") == pytest.approx(want[40:], rel=1e-12, abs=0)
