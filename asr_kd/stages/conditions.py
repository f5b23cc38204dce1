"""The conditions stage: the run's systems on extra test conditions, beside the usual test set.

With ``data.train_synthesizer`` set, prepare writes ``cross-synth``: the speakers of the
synthesizer the run never trained on (``prepare/condition-cross-synth.jsonl``), and with
``data.cross_synth_dev_speakers`` a tuning set of other such speakers, ``cross-synth-dev``.
Each condition is evaluated as ``python -m asr_kd.evaluate`` would (:mod:`asr_kd.decoding.evaluate`:
features with the run's settings, frame labels from the run's GMM) into ``<exp>/eval/<condition>/``,
for the teachers, the ensemble and the students, every system at the acoustic scale it chose on
dev, except that with ``cross-synth-dev`` every system is scored on ``cross-synth`` at the scale
it chose on ``cross-synth-dev`` (tuned on the shifted domain, not on its test voices). Each is also
searched at every scale of ``decode.acoustic_scales`` and ``decode.condition_scales`` (its WER per
scale in the summary), since a shifted domain may want another scale than dev chose (the
condition's time grows with the grid).
The summary gives, per condition, the mean teacher, the ensemble and the best student (on dev)
with 95 % bootstrap intervals over the condition's utterances, the ensemble's gain over the mean
teacher and the share of it the student keeps. Without a condition the stage does nothing.
"""

from __future__ import annotations

from typing import Any

from asr_kd.config import RecipeConfig
from asr_kd.paths import RunPaths

DOC = "extra test conditions (cross-synthesizer)"
# Which conditions exist is prepare's business; the systems and their scales come from decode.
READS = ("decode.condition_scales", "!data.train_synthesizer", "!decode", "!teachers.num_teachers", "!teachers.retune_epochs",
         "!distill.temperatures", "!distill.ensemble_mean", "!features", "!model", "!align", "!train.precision",
         "!train.accelerator")
AFTER = ("decode",)

# In this order: a tuning set before the condition it tunes.
CONDITIONS = ("cross-synth-dev", "cross-synth")
TUNED_ON = {"cross-synth": "cross-synth-dev"}


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Evaluate the teachers, the ensemble and the students on each condition prepare wrote."""
    from asr_kd.data.manifest import read_manifest
    from asr_kd.decoding.evaluate import condition_summary, evaluate_systems, prepare_data
    from asr_kd.decoding.systems import discover_systems
    from asr_kd.paths import EvalDir

    out: dict[str, Any] = {}
    chosen: dict[str, dict[str, float]] = {}  # condition -> system -> its best scale there
    for name in CONDITIONS:
        manifest = paths.condition_manifest(name)
        if not manifest.exists():
            continue
        ep = EvalDir(paths.eval_dir(name))
        data = prepare_data(cfg, paths, ep, read_manifest(manifest))
        systems = [s.name for s in discover_systems(cfg, paths)
                   if s.name.startswith(("teacher-", "distilled_T")) or s.name == "ensemble"]
        source = TUNED_ON.get(name)
        tuned = (source, chosen[source]) if source in chosen else None
        grid = (*cfg.decode.acoustic_scales, *cfg.decode.condition_scales)
        report = evaluate_systems(cfg, paths, ep, data, systems, scale_grid=grid, tuned=tuned)
        chosen[name] = {s["system"]: best_grid_scale(s["wer_by_scale"]) for s in report["systems"]}
        out[name] = condition_summary(paths, ep, report, data)
    return {"conditions": out}


def best_grid_scale(wer_by_scale: dict[str, float]) -> float:
    """The scale with the lowest WER (ties: the smallest scale), as the decode stage chooses on dev."""
    return float(min(wer_by_scale, key=lambda g: (wer_by_scale[g], float(g))))
