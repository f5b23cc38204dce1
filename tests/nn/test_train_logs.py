"""Lightning's messages reach a recipe's log once, through its logging, without Lightning's adverts
and the warnings that do not apply to the recipe's loaders."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_lightning_messages_are_logged_once_and_its_tips_are_dropped(tmp_path):
    code = textwrap.dedent(f"""
        import logging
        logging.basicConfig(level=logging.INFO, format="ROOT %(name)s: %(message)s")  # as the entry points do
        from asr_kd.config import TrainConfig
        from asr_kd.files import TrainRunDir
        from asr_kd.nn.train import build_trainer
        build_trainer(TrainConfig(accelerator="cpu"), TrainRunDir({str(tmp_path)!r}), max_epochs=1, progress_bar=False)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "GPU available" in ln]
    assert len(lines) == 1 and lines[0].startswith("ROOT lightning"), res.stderr
    assert "Tip:" not in res.stderr
    # this machine has srun (the SLURM test): Lightning's advice to use it is not the recipe's
    assert "prepend your python command with `srun`" not in res.stderr
