"""The export stage: a self-contained model directory per deployable system (teacher 0, the
ensemble, every student) under ``<exp>/models/<system>/``, its network as TorchScript and as ONNX
(without the ``onnx`` extra: TorchScript only, counted in the summary), and what each costs at
inference: parameters, MFLOPs per frame, real-time factor on one CPU thread with torch and with
onnxruntime (:mod:`asr_kd.decoding.modeldir`), and a model card (``README.md``) in each directory:
the system, its training data (a run on the synthetic corpus says it is a demo model that does not
read real speech), test WER and frame accuracy with bootstrap intervals, size, how to run it.

Runs finished before the card was written lack it until ``--force export``: the card is not in the
stage's config hash, so it does not make their exports stale.
"""

from __future__ import annotations

from typing import Any

from asr_kd.config import RecipeConfig
from asr_kd.paths import RunPaths
from asr_kd.work import Nothing

DOC = "model dirs (TorchScript, ONNX + graph) and inference cost"
AFTER = ("decode",)
# What the systems are and how their features were made: keyed by the stages that made them.
work = Nothing.of


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Write every model directory (TorchScript and ONNX checked against PyTorch) and measure its
    inference cost."""
    from asr_kd.stages._export import export_systems

    return export_systems(cfg, paths, training=training_data(cfg, paths))


def training_data(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """What the model cards say of the training data: ``synthetic`` (the embedded synthetic corpus,
    or a corpus ``python -m data_prep.synthetic`` wrote: its ``SYNTHETIC.json`` marker), a sentence
    naming the corpus, and the training split's utterances, speakers and hours (its manifest)."""
    from asr_kd.data.manifest import read_manifest
    from asr_kd.runner import marker_summary
    from asr_kd.stages.prepare import corpus_root
    from data_prep.synthetic import MARKER_NAME, voices_description

    root = corpus_root(cfg)
    synthetic = not cfg.data.root or (root / MARKER_NAME).exists()
    fmt = marker_summary(paths, "prepare").get("format", cfg.data.format)
    subsets = ", ".join(cfg.data.train_subsets) or "the corpus's own training subset"
    if synthetic:
        text = ("sentences of Jane Austen's novels" if cfg.data.synthetic_text == "books" and not cfg.data.root
                else "sentences")
        corpus = (f"The embedded synthetic corpus `{root.name}` (`data_prep.synthetic`): English read-speech "
                  f"{text} spoken by synthetic voices ({voices_description(root)}), in LibriSpeech layout.")
    else:
        corpus = f"`{root}` ({fmt} layout), training subsets: {subsets}."
    out: dict[str, Any] = {"synthetic": bool(synthetic), "corpus": corpus}
    if paths.manifest("train").exists():
        utts = read_manifest(paths.manifest("train"))
        out.update(utterances=len(utts), speakers=len({u.speaker for u in utts}),
                   hours=sum(u.duration for u in utts) / 3600.0)
    return out
