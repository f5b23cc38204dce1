"""The export stage: a self-contained model directory per deployable system (teacher 0, the
ensemble, every student) under ``<exp>/models/<system>/``, its network as TorchScript and as ONNX
(without the ``onnx`` extra: TorchScript only, counted in the summary), and what each costs at
inference: parameters, MFLOPs per frame, real-time factor on one CPU thread with torch and with
onnxruntime (:mod:`asr_kd.decoding.modeldir`).
"""

from __future__ import annotations

from typing import Any

from asr_kd.config import RecipeConfig
from asr_kd.paths import RunPaths

DOC = "model dirs (TorchScript, ONNX + graph) and inference cost"
# What the systems are and how their features were made: hashed by the stages that made them.
READS = ("!model", "!teachers.num_teachers", "!teachers.retune_epochs", "!distill.temperatures", "!distill.ensemble_mean", "!decode",
         "!features", "!data.sample_rate")
AFTER = ("decode",)


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Write every model directory (TorchScript and ONNX checked against PyTorch) and measure its
    inference cost."""
    from asr_kd.decoding.modeldir import export_systems

    return export_systems(cfg, paths)
