"""The import graph of asr_kd and data_prep: no circle, and no import that runs back up a layer.

Layers, bottom to top (docs/ARCHITECTURE.md):

    core       asr_kd/*.py: config, paths, runner, parallel, fileio, progress, runlock, envcheck, accounting
    data       asr_kd/data/
    align, nn  asr_kd/align/, asr_kd/nn/          (side by side: neither imports the other)
    data_prep  the corpus readers                 (side by side with align and nn)
    decoding   asr_kd/decoding/
    stages     asr_kd/stages/ (a stage per module; asr_kd/stages/_*.py: their work on a run directory)
    recipes    asr_kd/recipes/, and the other command-line entry points (asr_kd.transcribe, asr_kd.evaluate,
               asr_kd.align.kaldi_export)

A module imports modules of its own layer or of lower layers only. Besides:
- the library (data, align, nn, decoding) takes plain arguments: it imports neither ``asr_kd.runner``
  nor ``asr_kd.paths`` (the files inside one artefact's directory are ``asr_kd.files``; bad input is
  ``asr_kd.errors.InputError``, which the runner turns into the stage's ``StageError``); a stage's
  work on the run directory lives in ``asr_kd/stages/_*.py`` (issue 32);
- data_prep knows nothing of runs: from asr_kd it imports the data layer and the leaf utilities
  (fileio, progress, parallel) only, not config, paths or the runner;
- only the stages and the entry points import data_prep (the prepare stage and ``asr_kd.evaluate`` adapt
  the corpus reader to a run);
- a stage module imports only core modules at module level (its library inside ``run``), so the
  recipe's ``--help``/``--list`` stay instant and a broken native install is reported by envcheck.
Imports inside functions count: they are dependencies too.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path

import pytest

from asr_kd.config import RecipeConfig

ROOT = Path(__file__).resolve().parents[1]
RANK = {"core": 0, "data": 1, "align": 2, "nn": 2, "data_prep": 2, "decoding": 3, "stages": 4, "recipes": 5}
DATA_PREP_MAY_USE_FROM_CORE = {"asr_kd.fileio", "asr_kd.progress", "asr_kd.parallel"}
LIBRARY = ("data", "align", "nn", "decoding")
RUN_MODULES = {"asr_kd.runner", "asr_kd.paths"}  # the run directory, its stages and their markers


def modules() -> dict[str, Path]:
    out = {}
    for top in ("asr_kd", "data_prep"):
        for f in sorted((ROOT / top).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = f
    return out


MODULES = modules()


# Commands a user runs (python -m ...) beside the recipe: the top layer, though they sit at the top of the package.
# python -m asr_kd.align.kaldi_export reads a run directory (its align stage's output) like the other two.
ENTRY_POINTS = {"asr_kd.transcribe", "asr_kd.evaluate", "asr_kd.align.kaldi_export"}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "data_prep":
        return "data_prep"
    if module in ENTRY_POINTS:
        return "recipes"
    if len(parts) > 1 and parts[1] in RANK:
        return parts[1]
    return "core"


def _resolve(name: str) -> str | None:
    """The project module an import names (a package's module, or the package), None if external."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            target = _resolve(n)
            if target is not None and target != module:
                out.add(target)
    return out


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_is_in_a_layer():
    assert set(map(layer, MODULES)) <= set(RANK)


def test_no_import_circle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_no_import_runs_up_a_layer():
    bad = []
    for m, targets in GRAPH.items():
        for t in targets:
            if layer(t) == layer(m):
                continue
            if RANK[layer(t)] >= RANK[layer(m)]:
                bad.append(f"{m} ({layer(m)}) imports {t} ({layer(t)})")
    assert not bad, "\n".join(bad)


def run_imports(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The library modules that import the runner or the run directory's paths, and which of the two."""
    return {m: targets & RUN_MODULES for m, targets in graph.items()
            if layer(m) in LIBRARY and targets & RUN_MODULES}


def test_the_library_takes_plain_arguments():
    bad = [f"{m} imports {', '.join(sorted(t))}: hand it plain arguments (paths, a config section) from its "
           "stage, raise asr_kd.errors.InputError, or move the run-directory work to asr_kd/stages/_*.py"
           for m, t in sorted(run_imports(GRAPH).items())]
    assert not bad, "\n".join(bad)


def test_the_library_is_handed_config_sections_not_the_whole_config():
    """A library function gets its section (``cfg.train``, ``cfg.align``), never the RecipeConfig."""
    bad = []
    for m in sorted(m for m in MODULES if layer(m) in LIBRARY):
        for node in ast.walk(ast.parse(MODULES[m].read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "asr_kd.config":
                bad += [f"{m} imports asr_kd.config.{a.name}" for a in node.names if a.name == "RecipeConfig"]
    assert not bad, "\n".join(bad)


def test_the_library_rule_catches_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from asr_kd.runner import StageError\n    raise StageError('x')\n")
    MODULES["asr_kd.data._probe"] = module
    try:
        assert run_imports({"asr_kd.data._probe": imports("asr_kd.data._probe")}) == {
            "asr_kd.data._probe": {"asr_kd.runner"}}
    finally:
        del MODULES["asr_kd.data._probe"]


def test_data_prep_knows_nothing_of_runs():
    bad = [f"{m} imports {t}" for m, targets in GRAPH.items() if layer(m) == "data_prep" for t in targets
           if layer(t) not in ("data", "data_prep") and t not in DATA_PREP_MAY_USE_FROM_CORE]
    assert not bad, "\n".join(bad)


def test_only_the_stages_and_entry_points_import_data_prep():
    users = {m for m, targets in GRAPH.items() for t in targets if layer(t) == "data_prep" and layer(m) != "data_prep"}
    assert users and {layer(m) for m in users} <= {"stages", "recipes"}, users
    assert {m for m in users if layer(m) == "recipes"} <= ENTRY_POINTS, users


# asr_kd/stages/_*.py: a stage's work on the run directory that its module imports inside run (not stages)
STAGE_MODULES = sorted(m for m in MODULES if layer(m) == "stages" and m != "asr_kd.stages"
                       and not m.rpartition(".")[2].startswith("_"))


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_a_stage_module_imports_only_the_core_at_load(module):
    heavy = {t for t in imports(module, top_level_only=True) if layer(t) != "core"}
    assert not heavy, f"{module} imports {sorted(heavy)} at module level; import them inside run()"


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_a_stage_module_declares_itself_beside_its_run(module):
    mod = importlib.import_module(module)
    assert callable(mod.run)
    assert isinstance(mod.AFTER, tuple) and mod.DOC
    assert dataclasses.is_dataclass(mod.work(RecipeConfig())), "work(cfg): the stage's slice of the config (asr_kd.work)"


def test_the_recipe_lists_every_stage_module_in_pipeline_order():
    from asr_kd.paths import STAGE_NAMES
    from asr_kd.recipes.librispeech import STAGES

    assert [s.name for s in STAGES] == list(STAGE_NAMES)
    assert sorted(f"asr_kd.stages.{s.name}" for s in STAGES) == STAGE_MODULES
    for s in STAGES:
        assert s.run is importlib.import_module(f"asr_kd.stages.{s.name}").run
