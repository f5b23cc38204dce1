"""Each stage touches only the config keys it declares in its module's ``READS``.

The whole pipeline runs on a small cut of the smoke corpus with a config that records every
attribute read on its (frozen) sections while a stage runs; each key read must be covered by an
entry of that stage's ``READS``: ``"train"`` (a section), ``"decode.beam"`` (a key), or the same
with ``!`` (read, but left out of the stage's config hash: where a run happens, or a value whose
change reaches the stage through an upstream stage that re-runs).

A full copy of the config saved for provenance (``run_config=to_dict(cfg)`` in a checkpoint) is
not a read.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from asr_kd.config import RecipeConfig, load_config, to_dict
from asr_kd.paths import RunPaths
from asr_kd.recipes.librispeech import STAGES
from asr_kd.runner import Stage, StageRunner

pytestmark = pytest.mark.slow

FAST = {  # the smoke preset, smaller: the same code paths, fewer utterances, iterations and epochs
    "data.max_utts_per_split": "30", "align.mono_iters": "3", "align.mono_gaussians": "150",
    "align.tri_iters": "2", "align.tri_leaves": "60", "align.tri_gaussians": "200", "train.max_epochs": "1",
    "teachers.num_teachers": "2", "distill.subset_max_epochs": "1", "distill.student_max_epochs": "1",
    "decode.acoustic_scales": "0.1", "decode.gmm_acoustic_scales": "0.08", "decode.beam": "6",
    "decode.max_active": "300", "decode.lattice_beam": "2",
}


def recording(cfg: RecipeConfig, seen: set[str]) -> RecipeConfig:
    """``cfg`` whose sections add ``"section.key"`` to ``seen`` on every read of a key."""

    def recorder(base: type, section: str | None) -> type:
        names = {f.name for f in dataclasses.fields(base)}

        def __getattribute__(self, name):  # noqa: N807
            value = object.__getattribute__(self, name)
            if name in names and (section is not None or not dataclasses.is_dataclass(value)):
                seen.add(f"{section}.{name}" if section else name)
            return value

        return type(f"Recording{base.__name__}", (base,), {"__getattribute__": __getattribute__})

    sections = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = recorder(type(value), f.name)(**{g.name: getattr(value, g.name) for g in dataclasses.fields(value)})
        sections[f.name] = value
    return recorder(type(cfg), None)(**sections)


def covered(key: str, reads: tuple[str, ...]) -> bool:
    section = key.partition(".")[0]
    return any(r.lstrip("!") in (key, section) for r in reads)


def test_each_stage_reads_only_the_config_it_declares(smoke_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    import asr_kd.stages._training as runs

    cfg = load_config("smoke", {**FAST, "data.root": str(smoke_corpus)})
    seen: set[str] = set()
    rec = recording(cfg, seen)
    # the provenance copy of the whole config in each checkpoint is not a read of it
    monkeypatch.setattr(runs, "to_dict", lambda obj: to_dict(cfg) if obj is rec else to_dict(obj))
    touched: dict[str, set[str]] = {}

    def watched(stage: Stage) -> Stage:
        def run(_cfg: RecipeConfig, paths: RunPaths) -> dict:
            seen.clear()
            try:
                return stage.run(rec, paths)
            finally:
                touched[stage.name] = set(seen)

        return dataclasses.replace(stage, run=run)

    StageRunner([watched(s) for s in STAGES], cfg, RunPaths(tmp_path / "exp")).run()
    assert set(touched) == {s.name for s in STAGES}
    undeclared = {s.name: sorted(k for k in touched[s.name] if not covered(k, s.reads)) for s in STAGES}
    if any(undeclared.values()):
        pytest.fail("keys read but not in the stage's READS: " + json.dumps({k: v for k, v in undeclared.items() if v}))
    assert touched["decode"] and touched["teachers"]  # the recorder saw the reads
