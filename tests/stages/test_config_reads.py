"""Each stage reads only config that keys its work: a value its own work slice (its module's
``work``, :mod:`asr_kd.work`) or an upstream stage's holds, or one that says where the work runs.

The whole pipeline runs on a small cut of the smoke corpus with a config that records every
attribute read on its (frozen) sections while a stage runs, and while each stage's ``work`` builds
its slice. A value a stage reads that no slice up its chain holds could change its outputs without
making it stale.

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
from asr_kd.work import record

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


# read on purpose without keying the stage's work, and why
UNKEYED = {
    # min_utterance_samples: a floor for usable audio (windows are edge-padded); a changed model
    # context must not re-run the data preparation
    "prepare": {"model.left_context", "model.right_context", "features.frame_length_ms", "features.frame_shift_ms"},
}


def where_keys() -> set[str]:
    """The config fields marked WHERE: where or how fast work runs."""
    out = set()
    for f in dataclasses.fields(RecipeConfig):
        section = getattr(RecipeConfig(), f.name)
        if dataclasses.is_dataclass(section):
            out |= {f"{f.name}.{g.name}" for g in dataclasses.fields(section) if g.metadata.get("asr_kd.work") == "where"}
    return out


def keyed(stages: list[Stage], rec: RecipeConfig, seen: set[str]) -> dict[str, set[str]]:
    """Per stage, the config its work slice or an upstream stage's holds."""
    own = {}
    for s in stages:
        seen.clear()
        record(s.work(rec))
        own[s.name] = set(seen)
    by_name = {s.name: s for s in stages}

    def chain(name: str) -> set[str]:
        return own[name].union(*(chain(up) for up in by_name[name].after))

    return {s.name: chain(s.name) for s in stages}


def test_each_stage_reads_only_config_that_keys_its_work(smoke_corpus: Path, tmp_path: Path, monkeypatch) -> None:
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
    allowed = keyed(STAGES, rec, seen)
    where = where_keys()
    unkeyed = {s.name: sorted(k for k in touched[s.name] - allowed[s.name] - where - UNKEYED.get(s.name, set()))
               for s in STAGES}
    if any(unkeyed.values()):
        pytest.fail("config read by a stage but held by no work slice up its chain: "
                    + json.dumps({k: v for k, v in unkeyed.items() if v}))
    assert touched["decode"] and touched["teachers"]  # the recorder saw the reads
