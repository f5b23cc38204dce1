"""The report stage: the paper-shaped report of a run, from the stage markers and decode summaries.

Owns ``<exp>/report.json``, ``report.md`` and the PNG plots (names in :mod:`asr_kd.paths`):
Tables 1 and 5 beside the paper's, derived figures with bootstrap intervals, the GMM-HMM systems,
the corpus and what was lost on the way, wall time per stage. The work is the library's
:mod:`asr_kd.decoding.report`: ``collect`` (markers -> rows), ``statistics`` (the effects and the
bootstrap), ``render`` (report.md), ``plots``; this module chooses what goes in.

Frame accuracies and WERs in ``report.json`` are fractions (0.589, not 58.9); ``report.md``
prints percentages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asr_kd.config import RecipeConfig
from asr_kd.fileio import write_json, write_text
from asr_kd.paths import RunPaths
from asr_kd.runner import marker_summary

if TYPE_CHECKING:
    from asr_kd.decoding.report.rows import ErrorDiff, Report

DOC = "report.json, report.md, plots"
AFTER = ("decode", "conditions", "export")


@dataclass(frozen=True)
class Work:
    """The preset the report is titled by (what it tabulates: the upstream stages')."""

    preset: str


def work(cfg: RecipeConfig) -> Work:
    return Work(cfg.preset)




def test_groups(paths: RunPaths) -> tuple[str, dict[str, list[str]]] | None:
    """The test utterances in the groups the run's corpus defines, with what they are grouped by:
    the synthetic corpus's voice families (:func:`data_prep.synthetic.test_groups`);
    None for a corpus without groups."""
    from asr_kd.data.manifest import read_manifest
    from data_prep import synthetic

    root = marker_summary(paths, "prepare").get("corpus_root")
    if not root or not paths.manifest("test").exists():
        return None
    groups = synthetic.test_groups(Path(root), read_manifest(paths.manifest("test")))
    return (synthetic.GROUP_KIND, groups) if groups else None


def test_errors(paths: RunPaths, best_student: str | None) -> ErrorDiff | None:
    """Where the best student's test errors differ from the ensemble's (their ``per_utt`` files),
    split by whether the training transcripts held the word; None when either was not decoded."""
    from asr_kd.data.manifest import iter_manifest
    from asr_kd.decoding.report.errors import compare_errors

    if not best_student:
        return None
    a, b = (paths.decode_dir(s, "test") / "per_utt" for s in ("ensemble", best_student))
    if not (a.exists() and b.exists()):
        return None
    train = paths.manifest("train")
    words = {w for u in iter_manifest(train) for w in u.text.split()} if train.exists() else None
    return compare_errors("ensemble", a, best_student, b, words)


def build_report(cfg: RecipeConfig, paths: RunPaths) -> Report:
    """The report of the run: its tables and sections, the effects with their intervals."""
    from asr_kd.decoding.report import statistics
    from asr_kd.decoding.report.rows import Report, given
    from asr_kd.stages import _collect as collect

    table1, table5 = collect.table1_rows(cfg, paths), collect.table5_rows(cfg, paths)
    counts = collect.utt_counts(paths, statistics.decoded_systems(table1, table5))
    table1, table5, derived = statistics.with_intervals(
        table1, table5, statistics.effects(table1, table5), counts, test_groups(paths) if counts else None)
    errors = test_errors(paths, given(derived.best_student))
    if errors is not None:
        derived = dataclasses.replace(derived, errors=errors)
    test = statistics.test_condition(table1, derived)
    return Report(table1=table1, table5=table5, gmm=collect.gmm_baseline(paths), gmm_systems=collect.gmm_rows(paths),
                  derived=derived, corpus=collect.corpus_section(paths), labels=collect.labels_section(paths),
                  graph=marker_summary(paths, "graph"), lm=collect.lm_section(paths),
                  timing=collect.timing_section(paths), timing_parts=collect.timing_parts(paths),
                  deployment=marker_summary(paths, "export") or None,
                  conditions=([test] if test else []) + collect.extra_conditions(paths),
                  preset=cfg.preset, subset_fraction=cfg.distill.subset_fraction)


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """report.json, report.md and the plots from the markers and decode summaries."""
    from asr_kd.decoding.report import plots
    from asr_kd.decoding.report.render import render_markdown
    from asr_kd.stages import _collect as collect

    report = build_report(cfg, paths)
    write_json(paths.report_json, report.to_json())
    write_text(paths.report_md, render_markdown(report))
    plots.plot_vs_temperature(report, paths.plot_vs_temperature)
    plots.plot_table5_curves(collect.table5_curves(paths), paths.plot_table5_curves, cfg.distill.subset_fraction,
                             cfg.distill.subset_period, report)
    return {"report_json": paths.report_json.name, "table1_rows": len(report.table1),
            "table5_rows": len(report.table5), "derived": report.to_json()["derived"]}
