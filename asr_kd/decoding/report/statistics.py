"""The report's effects and their uncertainty: one paired bootstrap over the test utterances
(:mod:`asr_kd.decoding.stats`) for every system, giving each row's intervals, the effects'
intervals, paired tests and the WER per group of the test set. Nothing here mutates its arguments:
rows come back as new rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from asr_kd.decoding.report.rows import (
    ABSENT, BootstrapInfo, ByGroup, Condition, ConditionCell, Derived, GroupRow, PairedTest, Table1Row, Table5Row,
    given,
)
from asr_kd.decoding.stats import Bootstrap, UttCounts, interval, mean_over, paired_test, ratio_of_gains
from asr_kd.files import TABLE5_RUNS

# The paper's numbers (Hinton, Vinyals & Dean 2015, Tables 1 and 5), in percent.
PAPER_TABLE1 = {"baseline": (58.9, 10.9), "ensemble": (61.1, 10.7), "distilled": (60.8, 10.7)}
PAPER_TABLE5 = {"baseline_100": (63.4, 58.9), "baseline_3": (67.3, 44.5), "soft_3": (65.4, 57.0)}
PAPER_EFFECTS = {"gain_kept": (60.8 - 58.9) / (61.1 - 58.9), "gap_recovered": (57.0 - 44.5) / (58.9 - 44.5)}

BOOTSTRAP_UNIT = "test utterances, paired across systems; 95 % percentile intervals"


def best_student(students: Sequence[Table1Row]) -> Table1Row:
    """The student with the best dev frame accuracy (test accuracy only where dev is missing)."""
    return max(students, key=lambda r: (given(r.dev_frame_acc) is not None, given(r.dev_frame_acc) or r.frame_acc))


def effects(table1: Sequence[Table1Row], table5: Sequence[Table5Row]) -> Derived:
    """Share of the ensemble's frame-accuracy gain the best student keeps; share of the 3% gap recovered."""
    by = {r.system: r for r in table1}
    out = Derived()
    base, ens = by.get("baseline_mean", by.get("baseline")), by.get("ensemble")
    students = [r for r in table1 if r.system.startswith("distilled_T") and r.frame_acc is not None]
    if base and ens and students and base.frame_acc is not None and ens.frame_acc is not None:
        best = best_student(students)
        gain = ens.frame_acc - base.frame_acc
        out.best_student = best.system
        out.ensemble_gain = gain
        out.student_gain = best.frame_acc - base.frame_acc
        out.gain_kept = out.student_gain / gain if gain > 0 else None
        if base.wer is not None and ens.wer is not None and best.wer is not None:
            wer_gain = base.wer - ens.wer
            out.ensemble_wer_gain = wer_gain
            out.wer_gain_kept = (base.wer - best.wer) / wer_gain if wer_gain > 0 else None
    t5 = {r.system: r for r in table5}
    same = t5.get("baseline_100")
    if out.best_student and same and same.decoded_as == "baseline_100" and same.test_frame_acc is not None:
        # The teachers may be trained by another rule (e.g. a fixed epoch budget) than the students:
        # the gain measured from a single hard-target model trained by the students' own rule.
        gain_same = ens.frame_acc - same.test_frame_acc
        out.gain_kept_same_rule = (best.frame_acc - same.test_frame_acc) / gain_same if gain_same > 0 else None
        if same.wer is not None and ens.wer is not None and best.wer is not None:
            # in WER the rule can matter more than the targets: a hard-target model trained by the
            # students' rule may match the ensemble of shorter-trained teachers (RESULTS.md, tiny-wer)
            wer_same = same.wer - ens.wer
            out.ensemble_wer_gain_same_rule = wer_same
            out.wer_gain_kept_same_rule = (same.wer - best.wer) / wer_same if wer_same > 0 else None
    if all(n in t5 for n in TABLE5_RUNS):
        full, hard, soft = (t5[n].test_frame_acc for n in TABLE5_RUNS)
        if None not in (full, hard, soft):
            gap = full - hard
            out.table5_gap = gap
            out.gap_recovered = (soft - hard) / gap if gap > 0 else None
        full, hard, soft = (t5[n].wer for n in TABLE5_RUNS)
        if None not in (full, hard, soft):
            gap = hard - full
            out.table5_wer_gap = gap
            out.wer_gap_recovered = (hard - soft) / gap if gap > 0 else None
    out.paper = dict(PAPER_EFFECTS)
    return out


def decoded_systems(table1: Sequence[Table1Row], table5: Sequence[Table5Row]) -> list[str]:
    """Every decoded system behind the tables' rows, in order."""
    return [n for r in [*table1, *table5] for n in r.decoded_systems()]


def with_intervals(table1: Sequence[Table1Row], table5: Sequence[Table5Row], derived: Derived,
                   counts: dict[str, UttCounts], groups: tuple[str, dict[str, list[str]]] | None = None,
                   ) -> tuple[list[Table1Row], list[Table5Row], Derived]:
    """The tables and effects with intervals: ``wer_ci`` (and the frame accuracy's) of every row,
    ``gain_kept_ci``, ``gap_recovered_ci``, paired tests, the WER per group of the test set
    (``groups``: what the corpus groups by, and the test utterances of each group): one paired
    bootstrap over the test utterances every system decoded (``counts``). Without counts: as given."""
    if not counts:
        return list(table1), list(table5), derived
    utts = sorted(set.intersection(*(set(c.utts) for c in counts.values())))
    boot = Bootstrap(utts)
    wer = {n: boot.wer(c.reorder(utts)) for n, c in counts.items()}
    acc = {n: boot.frame_acc(c.reorder(utts)) for n, c in counts.items()}

    def reps(names: list[str], table: dict[str, np.ndarray]) -> np.ndarray | None:
        return mean_over([table[n] for n in names]) if all(n in table for n in names) else None

    acc_by: dict[str, np.ndarray] = {}  # replicates per row: Table 1's by system, Table 5's as table5:<system>
    wer_by: dict[str, np.ndarray] = {}

    def row_intervals(key: str, names: list[str], frame_acc: float | None) -> tuple[list | None, list]:
        w, a = reps(names, wer), reps(names, acc)
        if w is not None:
            wer_by[key] = w
        if a is not None and frame_acc is not None:
            acc_by[key] = a
            return (interval(w) if w is not None else None), interval(a)
        return (interval(w) if w is not None else None), ABSENT

    new1 = []
    for r in table1:
        wer_ci, acc_ci = row_intervals(r.system, r.decoded_systems(), r.frame_acc)
        new1.append(dataclasses.replace(r, wer_ci=wer_ci, frame_acc_ci=acc_ci))
    new5 = []
    for r in table5:
        wer_ci, acc_ci = row_intervals("table5:" + r.system, r.decoded_systems(), r.test_frame_acc)
        new5.append(dataclasses.replace(r, wer_ci=wer_ci, test_frame_acc_ci=acc_ci))

    d = dataclasses.replace(derived)
    d.bootstrap = BootstrapInfo(int(boot.idx.shape[0]), len(utts), BOOTSTRAP_UNIT)
    base, ens, best = "baseline_mean", "ensemble", given(derived.best_student)
    if best and all(k in acc_by for k in (base, ens, best)):
        d.gain_kept_ci = interval(ratio_of_gains(acc_by[best] - acc_by[base], acc_by[ens] - acc_by[base]))
    same = "table5:baseline_100"
    if given(derived.gain_kept_same_rule) is not None and best in acc_by and ens in acc_by and same in acc_by:
        d.gain_kept_same_rule_ci = interval(ratio_of_gains(acc_by[best] - acc_by[same], acc_by[ens] - acc_by[same]))
    if given(derived.wer_gain_kept_same_rule) is not None and best in wer_by and ens in wer_by and same in wer_by:
        d.wer_gain_kept_same_rule_ci = interval(ratio_of_gains(wer_by[same] - wer_by[best],
                                                               wer_by[same] - wer_by[ens]))
    t5 = ["table5:" + n for n in TABLE5_RUNS]
    if all(k in acc_by for k in t5):
        full, hard, soft = (acc_by[k] for k in t5)
        d.gap_recovered_ci = interval(ratio_of_gains(soft - hard, full - hard))
    if best and given(derived.wer_gain_kept) is not None and all(k in wer_by for k in (base, ens, best)):
        d.wer_gain_kept_ci = interval(ratio_of_gains(wer_by[base] - wer_by[best], wer_by[base] - wer_by[ens]))
    if given(derived.wer_gap_recovered) is not None and all(k in wer_by for k in t5):
        full, hard, soft = (wer_by[k] for k in t5)
        d.wer_gap_recovered_ci = interval(ratio_of_gains(hard - soft, hard - full))
    rows = {r.system: r for r in new1}
    d.paired_tests = {}
    for label, a, b in (("ensemble_vs_mean_teacher", ens, base), ("best_student_vs_mean_teacher", best, base),
                        ("best_student_vs_baseline", best, "baseline"), ("ensemble_vs_best_student", ens, best)):
        if a in wer_by and b in wer_by:
            d.paired_tests[label] = PairedTest([a, b], "wer",
                                               **paired_test(wer_by[a], wer_by[b], rows[a].wer - rows[b].wer))
    same_row = next((r for r in new5 if r.system == "baseline_100"), None)
    if given(derived.ensemble_wer_gain_same_rule) is not None and same_row is not None and same in wer_by:
        for label, a in (("ensemble_vs_same_rule_baseline", ens), ("best_student_vs_same_rule_baseline", best)):
            if a in wer_by:
                d.paired_tests[label] = PairedTest([a, "baseline_100"], "wer", **paired_test(
                    wer_by[a], wer_by[same], rows[a].wer - same_row.wer))
    if groups:
        kind, members = groups
        teachers = rows[base].decoded_systems() if base in rows else []
        d.test_by = ByGroup(kind, by_group(members, utts, counts, {
            "mean_teacher": teachers, "ensemble": [ens], "best_student": [best] if best else []}))
    if base in wer_by and rows[base].wer:
        low, high = interval(wer_by[base])
        d.wer_resolution_rel = (high - low) / 2.0 / rows[base].wer
    return new1, new5, d


def by_group(groups: dict[str, list[str]], decoded: list[str], counts: dict[str, UttCounts],
             systems: dict[str, list[str]]) -> list[GroupRow]:
    """Per group of the test set: WER with its 95 % bootstrap interval (over that group's
    utterances among ``decoded``, those every system decoded) of each system, a system's several
    decodes (the mean teacher's) averaged."""
    common = set(decoded)
    rows = []
    for group, ids in sorted(groups.items()):
        utts = sorted(common.intersection(ids))
        if not utts:
            continue
        boot = Bootstrap(utts)
        cells = {}
        for label, names in systems.items():
            if names and all(n in counts for n in names):
                sub = [counts[n].reorder(utts) for n in names]
                wer = float(np.mean([c.errors.sum() / max(c.words.sum(), 1.0) for c in sub]))
                cells[label] = {"wer": wer, "wer_ci": interval(mean_over([boot.wer(c) for c in sub]))}
        rows.append(GroupRow(group, len(utts), cells))
    return rows


def test_condition(table1: Sequence[Table1Row], derived: Derived) -> Condition | None:
    """The usual test set as a test condition (as the conditions stage's extra ones): the mean
    teacher, the ensemble and the best student with WER and frame accuracy (95 % intervals), the
    ensemble's gain over the mean teacher and the share the student keeps."""
    by = {r.system: r for r in table1}
    best = given(derived.best_student)
    if not (best and "baseline_mean" in by and "ensemble" in by):
        return None

    def cell(r: Table1Row) -> ConditionCell:
        return ConditionCell(wer=r.wer, wer_ci=r.wer_ci, frame_acc=r.frame_acc, frame_acc_ci=r.frame_acc_ci,
                             wer_std=r.wer_std)

    mt, en, st = by["baseline_mean"], by["ensemble"], by[best]
    return Condition("test", utterances=derived.bootstrap.test_utterances if derived.bootstrap else None,
                     best_student=best, mean_teacher=cell(mt), ensemble=cell(en), student=cell(st),
                     ensemble_wer_gain=given(derived.ensemble_wer_gain), wer_gain_kept=given(derived.wer_gain_kept),
                     wer_gain_kept_ci=given(derived.wer_gain_kept_ci),
                     gain_kept=given(derived.gain_kept), gain_kept_ci=given(derived.gain_kept_ci))
