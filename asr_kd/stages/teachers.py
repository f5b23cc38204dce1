"""The teachers stage: K teacher DNNs differing only by their seed, resumable per teacher
(``teachers.only=k``: one task of a cluster job array; ``teachers.stacked``: all K at once), then,
with ``teachers.retune_epochs`` > 0, their output layers re-tuned on the training utterances of
``teachers.retune_synthesizer``'s voices (a synthetic corpus).
The runs and their keys: :mod:`asr_kd.nn.runs`; one training run: :mod:`asr_kd.nn.train`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asr_kd.config import TRAIN_WHERE_NOT_WHAT_READS, RecipeConfig
from asr_kd.paths import RunPaths
from asr_kd.runner import StageError, marker_summary

DOC = "K teacher DNNs (Lightning)"
READS = ("model", "train", *TRAIN_WHERE_NOT_WHAT_READS, "teachers.num_teachers", "teachers.stacked",
         "teachers.seed_base", "teachers.retune_epochs", "teachers.retune_synthesizer", "teachers.retune_lr",
         "features.num_mel_bins", "!teachers.only")  # only: which share this process trains
AFTER = ("shards",)
DISTRIBUTED = True  # every rank of a DDP run joins


def retune_utterances(cfg: RecipeConfig, paths: RunPaths) -> frozenset[str] | None:
    """The training utterances the output-layer re-tune trains on: those whose voice (an augmented
    copy: its source's) is one of teachers.retune_synthesizer's; None without a re-tune."""
    if cfg.teachers.retune_epochs <= 0:
        return None
    from asr_kd.config import retune_synthesizers
    from asr_kd.data.manifest import read_manifest
    from data_prep.synthetic import SPEAKERS_NAME, utterance_synthesizers

    root = marker_summary(paths, "prepare").get("corpus_root")
    if not root or not (Path(root) / SPEAKERS_NAME).exists():
        raise StageError(f"teachers.retune_synthesizer={cfg.teachers.retune_synthesizer!r} needs a synthetic corpus, "
                         f"whose {SPEAKERS_NAME} names each speaker's synthesizer; the prepare stage's corpus "
                         f"({root or 'unknown'}) has none. Set teachers.retune_epochs=0")
    wanted = set(retune_synthesizers(cfg.teachers.retune_synthesizer))
    synth_of = utterance_synthesizers(Path(root), read_manifest(paths.manifest("train")))
    return frozenset(u for u, synth in synth_of.items() if synth in wanted)


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Train the K teachers (and re-tune them); the summary lists each with its dev/test frame accuracy."""
    from asr_kd.nn.runs import train_teachers

    return train_teachers(cfg, paths, retune_utterances(cfg, paths))
