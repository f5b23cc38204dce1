"""The report stage: the paper-shaped report of a run, from the stage markers and decode summaries.

Owns ``<exp>/report.json``, ``report.md`` and the PNG plots (names in :mod:`asr_kd.paths`):
Tables 1 and 5 beside the paper's, derived figures with bootstrap intervals, the GMM-HMM systems,
the corpus and what was lost on the way, wall time per stage.

Frame accuracies and WERs in ``report.json`` are fractions (0.589, not 58.9); ``report.md``
prints percentages.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from asr_kd.accounting import loss_account
from asr_kd.config import RecipeConfig
from asr_kd.fileio import atomic_path, read_json, write_json, write_text
from asr_kd.paths import STAGE_NAMES, TABLE5_RUNS, RunPaths, TrainRunDir
from asr_kd.runner import marker_summary

DOC = "report.json, report.md, plots"
READS = ("!preset", "!teachers.num_teachers", "!distill")  # what to tabulate: via the upstream stages
AFTER = ("decode", "conditions", "export")

# The paper's numbers (Hinton, Vinyals & Dean 2015, Tables 1 and 5), in percent.
PAPER_TABLE1 = {"baseline": (58.9, 10.9), "ensemble": (61.1, 10.7), "distilled": (60.8, 10.7)}
PAPER_TABLE5 = {"baseline_100": (63.4, 58.9), "baseline_3": (67.3, 44.5), "soft_3": (65.4, 57.0)}


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------
TABLE1_KEYS = ("system", "frame_acc", "wer", "params")
TABLE5_KEYS = ("system", "train_frame_acc", "test_frame_acc", "wer")


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _rtf(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _epochs(e: float | None) -> str:
    return "" if e is None else f"{e:g}" if isinstance(e, int) or float(e).is_integer() else f"{e:.1f}"


def _ci(ci: list[float] | None, scale: float = 100.0, digits: int = 1) -> str:
    """" [low, high]" for an interval (in percent by default), "" when there is none."""
    if not ci or any(math.isnan(v) for v in ci):
        return ""
    return f" [{scale * ci[0]:.{digits}f}, {scale * ci[1]:.{digits}f}]"


def _read_summary(paths: RunPaths, name: str) -> dict[str, Any] | None:
    p = paths.decode_summary(name)
    return read_json(p) if p.exists() else None


def _metrics(path: Path | None) -> dict[str, Any]:
    return read_json(path) if path is not None and path.exists() else {}


def _epochs_used(paths: RunPaths) -> dict[str, int | float | None]:
    """Epochs each system trained for (the training stages' summaries): what the convergence rule used."""
    out: dict[str, int | float | None] = {}
    teachers = marker_summary(paths, "teachers").get("teachers", [])
    if teachers:
        out["baseline"] = teachers[0].get("epochs")
        epochs = [t.get("epochs") for t in teachers if t.get("epochs") is not None]
        out["baseline_mean"] = statistics.fmean(epochs) if epochs else None
    distill = marker_summary(paths, "distill")
    for st in distill.get("students", []):
        out[f"distilled_T{st['T']:g}"] = st.get("epochs")
    for row in distill.get("table5", []):
        out[f"table5:{row['system']}"] = row.get("epochs")
    return out


def table1_rows(cfg: RecipeConfig, paths: RunPaths) -> list[dict[str, Any]]:
    """Table 1: baseline (teacher 0), baseline_mean (+ std over teachers), ensemble, distilled_T<T>."""
    rows: list[dict[str, Any]] = []
    epochs = _epochs_used(paths)
    teachers = [s for k in range(cfg.teachers.num_teachers) if (s := _read_summary(paths, f"teacher-{k}"))]
    t0 = _read_summary(paths, "teacher-0")
    if t0:
        rows.append({"system": "baseline", "frame_acc": t0["frame_acc"], "wer": t0["wer"], "params": t0["params"],
                     "dev_frame_acc": t0.get("dev_frame_acc")})
    if teachers:
        accs = [t["frame_acc"] for t in teachers if t["frame_acc"] is not None]
        wers = [t["wer"] for t in teachers]
        rows.append({
            "system": "baseline_mean", "frame_acc": statistics.fmean(accs) if accs else None,
            "wer": statistics.fmean(wers), "params": teachers[0]["params"],
            "frame_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "wer_std": statistics.stdev(wers) if len(wers) > 1 else 0.0, "num_teachers": len(teachers),
        })
    ens = _read_summary(paths, "ensemble")
    if ens:
        rows.append({"system": "ensemble", "frame_acc": ens["frame_acc"], "wer": ens["wer"],
                     "params": ens["params"] * cfg.teachers.num_teachers, "dev_frame_acc": ens.get("dev_frame_acc")})
    for row in rows:
        if row["system"] in epochs:
            row["epochs"] = epochs[row["system"]]
    for t in cfg.distill.temperatures:
        s = _read_summary(paths, f"distilled_T{t:g}")
        if s:
            rows.append({"system": f"distilled_T{t:g}", "frame_acc": s["frame_acc"], "wer": s["wer"],
                         "params": s["params"], "temperature": t, "dev_frame_acc": s.get("dev_frame_acc"),
                         "epochs": epochs.get(f"distilled_T{t:g}")})
    return rows


def table5_rows(cfg: RecipeConfig, paths: RunPaths) -> list[dict[str, Any]]:
    """Table 5: train/test frame accuracy and WER of the 100%-hard, 3%-hard and 3%-soft runs."""
    rows = []
    epochs = _epochs_used(paths)
    for name in TABLE5_RUNS:
        own = TrainRunDir(paths.table5_dir(name))
        decoded = name if own.model.exists() or name != "baseline_100" else "teacher-0"
        run = own if decoded == name else TrainRunDir(paths.teacher_dirs(cfg.teachers.num_teachers)[0])
        s = _read_summary(paths, decoded)
        if s is None:
            continue
        train_acc = _metrics(run.metrics).get("train_frame_acc")
        rows.append({"system": name, "train_frame_acc": train_acc if isinstance(train_acc, float) else None,
                     "test_frame_acc": s["frame_acc"], "wer": s["wer"], "decoded_as": decoded,
                     "epochs": epochs.get(f"table5:{name}")})
    return rows


def best_student(students: list[dict[str, Any]]) -> dict[str, Any]:
    """The student with the best dev frame accuracy (test accuracy only where dev is missing)."""
    return max(students, key=lambda r: (r.get("dev_frame_acc") is not None, r.get("dev_frame_acc") or r["frame_acc"]))


def derived_figures(table1: list[dict[str, Any]], table5: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of the ensemble's frame-accuracy gain the best student keeps; share of the 3% gap recovered."""
    by = {r["system"]: r for r in table1}
    out: dict[str, Any] = {}
    base, ens = by.get("baseline_mean", by.get("baseline")), by.get("ensemble")
    students = [r for r in table1 if r["system"].startswith("distilled_T") and r["frame_acc"] is not None]
    if base and ens and students and base["frame_acc"] is not None and ens["frame_acc"] is not None:
        best = best_student(students)
        gain = ens["frame_acc"] - base["frame_acc"]
        out["best_student"] = best["system"]
        out["ensemble_gain"] = gain
        out["student_gain"] = best["frame_acc"] - base["frame_acc"]
        out["gain_kept"] = out["student_gain"] / gain if gain > 0 else None
    t5 = {r["system"]: r for r in table5}
    same = t5.get("baseline_100")
    if "best_student" in out and same and same.get("decoded_as") == "baseline_100" and same["test_frame_acc"] is not None:
        # The teachers may be trained by another rule (e.g. a fixed epoch budget) than the students:
        # the gain measured from a single hard-target model trained by the students' own rule.
        gain_same = ens["frame_acc"] - same["test_frame_acc"]
        out["gain_kept_same_rule"] = ((best["frame_acc"] - same["test_frame_acc"]) / gain_same
                                      if gain_same > 0 else None)
    if all(n in t5 for n in TABLE5_RUNS):
        full, hard, soft = (t5[n]["test_frame_acc"] for n in TABLE5_RUNS)
        if None not in (full, hard, soft):
            gap = full - hard
            out["table5_gap"] = gap
            out["gap_recovered"] = (soft - hard) / gap if gap > 0 else None
    out["paper"] = {"gain_kept": (60.8 - 58.9) / (61.1 - 58.9), "gap_recovered": (57.0 - 44.5) / (58.9 - 44.5)}
    return out


# ---------------------------------------------------------------------------------------------
# Uncertainty: bootstrap over test utterances (asr_kd.decoding.stats)
# ---------------------------------------------------------------------------------------------
def _decoded_systems(cfg: RecipeConfig, row: dict[str, Any]) -> list[str]:
    """The decoded system(s) behind a table row (baseline_mean: every teacher)."""
    name = row["system"]
    if "decoded_as" in row:
        return [row["decoded_as"]]
    if name == "baseline":
        return ["teacher-0"]
    if name == "baseline_mean":
        return [f"teacher-{k}" for k in range(row.get("num_teachers", cfg.teachers.num_teachers))]
    return [name]


def add_uncertainty(cfg: RecipeConfig, paths: RunPaths, table1: list[dict[str, Any]],
                    table5: list[dict[str, Any]], derived: dict[str, Any]) -> None:
    """Add ``wer_ci`` (and ``frame_acc_ci``) to every row, ``gain_kept_ci``, ``gap_recovered_ci`` and
    paired tests to ``derived``: one paired bootstrap over the test utterances for all systems."""
    from asr_kd.decoding.stats import Bootstrap, UttCounts, interval, mean_over, paired_test, ratio_of_gains

    counts: dict[str, UttCounts] = {}
    for row in table1 + table5:
        for name in _decoded_systems(cfg, row):
            f = paths.decode_utt_counts(name)
            if name not in counts and f.exists():
                counts[name] = UttCounts.from_json(read_json(f))
    if not counts:
        return
    utts = sorted(set.intersection(*(set(c.utts) for c in counts.values())))
    boot = Bootstrap(utts)
    wer = {n: boot.wer(c.reorder(utts)) for n, c in counts.items()}
    acc = {n: boot.frame_acc(c.reorder(utts)) for n, c in counts.items()}

    def reps(row: dict[str, Any], table: dict[str, np.ndarray]) -> np.ndarray | None:
        names = _decoded_systems(cfg, row)
        return mean_over([table[n] for n in names]) if all(n in table for n in names) else None

    by: dict[str, np.ndarray] = {}  # frame-accuracy replicates per row
    wer_by: dict[str, np.ndarray] = {}
    for prefix, rows in (("", table1), ("table5:", table5)):
        for row in rows:
            w, a = reps(row, wer), reps(row, acc)
            row["wer_ci"] = interval(w) if w is not None else None
            if a is not None and row.get("frame_acc" if not prefix else "test_frame_acc") is not None:
                row["frame_acc_ci" if not prefix else "test_frame_acc_ci"] = interval(a)
                by[prefix + row["system"]] = a
            if w is not None:
                wer_by[prefix + row["system"]] = w
    derived["bootstrap"] = {"resamples": int(boot.idx.shape[0]), "test_utterances": len(utts),
                            "unit": "test utterances, paired across systems; 95 % percentile intervals"}
    base, ens, best = "baseline_mean", "ensemble", derived.get("best_student")
    if best and all(k in by for k in (base, ens, best)):
        derived["gain_kept_ci"] = interval(ratio_of_gains(by[best] - by[base], by[ens] - by[base]))
    same = "table5:baseline_100"
    if derived.get("gain_kept_same_rule") is not None and best in by and ens in by and same in by:
        derived["gain_kept_same_rule_ci"] = interval(ratio_of_gains(by[best] - by[same], by[ens] - by[same]))
    t5 = ["table5:" + n for n in TABLE5_RUNS]
    if all(k in by for k in t5):
        full, hard, soft = (by[k] for k in t5)
        derived["gap_recovered_ci"] = interval(ratio_of_gains(soft - hard, full - hard))
    tests = {}
    rows = {r["system"]: r for r in table1}
    for label, a, b in (("ensemble_vs_mean_teacher", ens, base), ("best_student_vs_mean_teacher", best, base),
                        ("best_student_vs_baseline", best, "baseline"), ("ensemble_vs_best_student", ens, best)):
        if a in wer_by and b in wer_by:
            tests[label] = {"systems": [a, b], "metric": "wer",
                            **paired_test(wer_by[a], wer_by[b], rows[a]["wer"] - rows[b]["wer"])}
    derived["paired_tests"] = tests
    grouped = test_groups(paths)
    if grouped:
        kind, groups = grouped
        teachers = _decoded_systems(cfg, rows["baseline_mean"]) if "baseline_mean" in rows else []
        derived[f"test_by_{kind}"] = by_group(
            kind, groups, utts, counts,
            {"mean_teacher": teachers, "ensemble": [ens], "best_student": [best] if best else []})
    if base in wer_by and rows[base]["wer"]:
        low, high = interval(wer_by[base])
        derived["wer_resolution_rel"] = (high - low) / 2.0 / rows[base]["wer"]


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


def by_group(kind: str, groups: dict[str, list[str]], decoded: list[str], counts: dict[str, Any],
             systems: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Per group of the test set (``kind``: what the corpus groups by): WER with its 95 % bootstrap
    interval (over that group's utterances among ``decoded``, those every system decoded) of each
    system, a system's several decodes (the mean teacher's) averaged."""
    from asr_kd.decoding.stats import Bootstrap, interval, mean_over

    common = set(decoded)
    rows = []
    for group, ids in sorted(groups.items()):
        utts = sorted(common.intersection(ids))
        if not utts:
            continue
        boot = Bootstrap(utts)
        row: dict[str, Any] = {kind: group, "utterances": len(utts)}
        for label, names in systems.items():
            if names and all(n in counts for n in names):
                sub = [counts[n].reorder(utts) for n in names]
                wer = float(np.mean([c.errors.sum() / max(c.words.sum(), 1.0) for c in sub]))
                row[label] = {"wer": wer, "wer_ci": interval(mean_over([boot.wer(c) for c in sub]))}
        rows.append(row)
    return rows


def used_corpus(paths: RunPaths, split: str) -> dict[str, Any] | None:
    """Hours, utterances and speakers of what training used: the utterances in ``split``'s shards
    (durations and speakers from the manifest); None before the shards stage."""
    from asr_kd.data.manifest import read_manifest

    index, manifest = paths.shard_index(split), paths.manifest(split)
    if not (index.exists() and manifest.exists()):
        return None
    ids = {utt for shard in read_json(index)["shards"] for utt, _ in shard["utts"]}
    utts = [u for u in read_manifest(manifest) if u.id in ids]
    return {"hours": round(sum(u.duration for u in utts) / 3600, 4), "utterances": len(ids),
            "speakers": len({u.speaker for u in utts})}


def corpus_section(paths: RunPaths) -> dict[str, Any]:
    """Per split: what training used (the shards), what prepare listed, and the one account of
    every utterance lost on the way, by stage and reason (:mod:`asr_kd.accounting`)."""
    prep = marker_summary(paths, "prepare")
    splits: dict[str, Any] = {}
    for split, v in prep.get("splits", {}).items():
        used = used_corpus(paths, split)
        splits[split] = {**(used or {k: v.get(k) for k in ("hours", "utterances", "speakers")}),
                         "listed_by_prepare": v.get("utterances"), "counted_from": "shards" if used else "prepare"}
    account = {split: a for split, a in loss_account(paths).items() if split in splits}
    return {
        "splits": splits,
        "lost": account,
        "lost_total": sum(r["count"] for a in account.values() for r in a["rows"]),
        "skipped": {s: v.get("skipped") for s, v in prep.get("splits", {}).items()},
        "skipped_total": prep.get("skipped_total"),
        "lm_text": prep.get("lm_text"),
    }


def labels_section(paths: RunPaths) -> dict[str, Any]:
    align = marker_summary(paths, "align")
    return {"num_pdfs": align.get("num_pdfs"), "context": align.get("context"),
            "source": align.get("source", "builtin GMM-HMM aligner" if align else None)}


LM_METRICS = ("tokens", "oov_tokens", "oov_rate", "perplexity")


def lm_section(paths: RunPaths) -> dict[str, Any] | None:
    """The decoding LM as LibriSpeech papers report it (report.json's ``lm``), from the graph stage:

    ``source``, ``order``, ``vocabulary_size`` (the words the graph can output: the LM's plus the
    training transcripts', never dev or test's), ``vocabulary_rule``, and per metric a map split ->
    value: ``tokens``, ``oov_tokens`` and ``oov_rate`` (transcript tokens outside the vocabulary,
    each a word error no search avoids), ``perplexity`` (SRILM's: OOVs not scored, ``</s>`` counted;
    null when nothing could be scored). E.g. ``lm.oov_rate.test``, ``lm.perplexity.dev``; the extra
    test sets (``data.extra_test_subsets``) under their names, ``lm.oov_rate.test-other``. None for
    a run whose graph stage predates it."""
    g = marker_summary(paths, "graph").get("lm")
    if not g or "splits" not in g:
        return None
    vocab = g.get("vocabulary") or {}
    out: dict[str, Any] = {"source": g.get("source"), "order": g.get("order"),
                           "vocabulary_size": vocab.get("in_graph"), "vocabulary_rule": vocab.get("rule")}
    splits = dict(g["splits"])
    for name, c in marker_summary(paths, "conditions").get("conditions", {}).items():
        if c.get("lm"):  # an extra test set (data.extra_test_subsets), e.g. test-other
            splits[name] = c["lm"]
    for metric in LM_METRICS:
        out[metric] = {split: v.get(metric) for split, v in splits.items()}
    return out


def timing_section(paths: RunPaths) -> dict[str, float]:
    """Wall time of each stage that ran, in pipeline order."""
    out = {}
    for stage in STAGE_NAMES:
        m = paths.marker(stage)
        if m.exists():
            out[stage] = read_json(m).get("wall_time_s")
    return out


def timing_parts(paths: RunPaths) -> dict[str, dict[str, float]]:
    """The optional work inside a stage's wall time, where a stage measured it: generating the
    synthetic corpus and the augmented copies (prepare)."""
    prep = marker_summary(paths, "prepare")
    parts = {"prepare": {"synthetic corpus generation": prep.get("synthetic_corpus_s"),
                         "augmented copies": prep.get("augment", {}).get("augment_s")}}
    return {stage: {k: v for k, v in p.items() if v is not None} for stage, p in parts.items()
            if any(v is not None for v in p.values())}


GMM_KEYS = ("system", "context", "num_pdfs", "num_gaussians", "train_loglike_per_frame", "dev_loglike_per_frame",
            "dev_wer", "wer", "acoustic_scale")


def gmm_rows(paths: RunPaths) -> list[dict[str, Any]]:
    """The align stage's GMM-HMMs side by side (monophone first): size, Viterbi log-likelihood per
    frame of train and dev under each system's final model, dev and test WER."""
    align = marker_summary(paths, "align")
    rows = []
    for name, loglikes in (("gmm_mono", align.get("monophone", {})), ("gmm", align)):
        dec = _read_summary(paths, name)
        if dec is None:
            continue
        rows.append({
            "system": name,
            "context": dec.get("context"),
            "num_pdfs": dec.get("num_pdfs"),
            "num_gaussians": dec.get("num_gaussians"),
            "train_loglike_per_frame": loglikes.get("train_loglike_per_frame"),
            "dev_loglike_per_frame": loglikes.get("dev_loglike_per_frame"),
            "dev_wer": dec.get("dev", {}).get("wer"),
            "wer": dec["wer"],
            "acoustic_scale": dec["acoustic_scale"],
        })
    return rows


def test_conditions(table1: list[dict[str, Any]], derived: dict[str, Any],
                    extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Per test set (the usual one, then the conditions stage's extra ones, e.g. ``test-other``):
    the mean teacher, the ensemble and the best student with WER and frame accuracy (95 %
    intervals), the ensemble's gain over the mean teacher and the share the student keeps."""
    by = {r["system"]: r for r in table1}
    best = derived.get("best_student")
    out: list[dict[str, Any]] = []
    if best and "baseline_mean" in by and "ensemble" in by:
        def row(r: dict[str, Any]) -> dict[str, Any]:
            keep = ("wer", "wer_ci", "frame_acc", "frame_acc_ci", "wer_std")
            return {k: r[k] for k in keep if k in r}

        mt, en, st = by["baseline_mean"], by["ensemble"], by[best]
        gain = mt["wer"] - en["wer"]
        out.append({"condition": "test", "utterances": derived.get("bootstrap", {}).get("test_utterances"),
                    "best_student": best, "mean_teacher": row(mt), "ensemble": row(en),
                    "student": row(st), "ensemble_wer_gain": gain,
                    "wer_gain_kept": (mt["wer"] - st["wer"]) / gain if gain > 0 else None,
                    "gain_kept": derived.get("gain_kept"), "gain_kept_ci": derived.get("gain_kept_ci")})
    for name, c in (extra or {}).items():
        out.append({"condition": name, **c})
    return out


def build_report(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    table1, table5 = table1_rows(cfg, paths), table5_rows(cfg, paths)
    derived = derived_figures(table1, table5)
    add_uncertainty(cfg, paths, table1, table5, derived)
    gmm = _read_summary(paths, "gmm")
    return {
        "units": "fractions (frame_acc and wer in [0, 1]; wer can exceed 1); frame accuracy on the test split",
        "table1": table1,
        "table5": table5,
        "gmm": {"wer": gmm["wer"], "acoustic_scale": gmm["acoustic_scale"]} if gmm else None,
        "gmm_systems": gmm_rows(paths),
        "derived": derived,
        "corpus": corpus_section(paths),
        "labels": labels_section(paths),
        "graph": marker_summary(paths, "graph"),
        "lm": lm_section(paths),
        "timing": timing_section(paths),
        "timing_parts": timing_parts(paths),
        "deployment": marker_summary(paths, "export") or None,
        "conditions": test_conditions(table1, derived, marker_summary(paths, "conditions").get("conditions", {})),
        "preset": cfg.preset,
        "subset_fraction": cfg.distill.subset_fraction,
    }


class ReportError(ValueError):
    """report.json does not follow the schema."""


def _check_number(where: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportError(f"{where}: expected a number, got {value!r}")


def validate_report(obj: dict[str, Any]) -> None:
    """Raise :class:`ReportError` naming the first place where ``obj`` breaks the report schema."""
    for key in ("table1", "table5", "corpus", "labels", "timing"):
        if key not in obj:
            raise ReportError(f"report: missing key {key!r}")
    for name, keys, rows in (("table1", TABLE1_KEYS, obj["table1"]), ("table5", TABLE5_KEYS, obj["table5"])):
        if not isinstance(rows, list):
            raise ReportError(f"{name}: expected a list of rows")
        for i, row in enumerate(rows):
            for k in keys:
                if k not in row:
                    raise ReportError(f"{name}[{i}]: missing key {k!r}")
            for k in keys[1:]:
                _check_number(f"{name}[{i}].{k}", row[k])
                if k != "params" and row[k] is not None and not (0.0 <= row[k] <= (10.0 if k == "wer" else 1.0)):
                    raise ReportError(f"{name}[{i}].{k}={row[k]}: rates are fractions")
    t1 = {r["system"] for r in obj["table1"]}
    allowed = {"baseline", "baseline_mean", "ensemble"}
    for s in t1:
        if s not in allowed and not (s.startswith("distilled_T") and _is_number(s[len("distilled_T"):])):
            raise ReportError(f"table1: unknown system {s!r}")
    for row in obj["table1"]:
        if row["system"] == "baseline_mean":
            for k in ("frame_acc_std", "wer_std"):
                if k not in row:
                    raise ReportError(f"table1 baseline_mean: missing {k!r}")
                _check_number(f"table1 baseline_mean.{k}", row[k])
    for row in obj["table5"]:
        if row["system"] not in TABLE5_RUNS:
            raise ReportError(f"table5: unknown system {row['system']!r}")
    for name in ("table1", "table5"):
        for row in obj[name]:
            ci = row.get("wer_ci")
            if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and ci[0] <= ci[1] + 1e-12):
                raise ReportError(f"{name} {row['system']}.wer_ci: expected [low, high], got {ci!r}")
    for i, row in enumerate(obj.get("gmm_systems") or []):
        for k in GMM_KEYS:
            if k not in row:
                raise ReportError(f"gmm_systems[{i}]: missing key {k!r}")
        for k in GMM_KEYS[2:]:
            _check_number(f"gmm_systems[{i}].{k}", row[k])
    lm = obj.get("lm")
    if lm is not None:
        if not isinstance(lm, dict):
            raise ReportError("lm: expected an object (source, vocabulary_size, oov_rate, perplexity, ...)")
        _check_number("lm.vocabulary_size", lm.get("vocabulary_size"))
        for metric in LM_METRICS:
            per_split = lm.get(metric)
            if not isinstance(per_split, dict):
                raise ReportError(f"lm.{metric}: expected {{split: value}}, got {per_split!r}")
            for split, value in per_split.items():
                _check_number(f"lm.{metric}.{split}", value, allow_none=metric == "perplexity")
                if metric == "oov_rate" and not 0.0 <= value <= 1.0:
                    raise ReportError(f"lm.oov_rate.{split}={value}: rates are fractions")
                if metric == "perplexity" and value is not None and value < 1.0:
                    raise ReportError(f"lm.perplexity.{split}={value}: a perplexity is at least 1")
    if not isinstance(obj["timing"], dict):
        raise ReportError("timing: expected {stage: seconds}")
    for stage, secs in obj["timing"].items():
        _check_number(f"timing.{stage}", secs)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: both tables beside the paper's, derived figures, corpus, labels, timing."""
    lines = [f"# asr-kd report ({report.get('preset', '')} preset)", "",
             "Frame accuracy on the test split (speakers not seen in training); WER on test with the "
             "acoustic scale chosen on dev.", "",
             "## Table 1: distilling the ensemble", "",
             "| system | test frame acc | WER | params | epochs | paper frame acc | paper WER |",
             "|---|---|---|---|---|---|---|"]
    for r in report["table1"]:
        paper_key = "distilled" if r["system"].startswith("distilled") else r["system"]
        paper = PAPER_TABLE1.get(paper_key) or (PAPER_TABLE1["baseline"] if r["system"] == "baseline_mean" else None)
        acc, wer = _pct(r["frame_acc"]), _pct(r["wer"])
        if r["system"] == "baseline_mean":
            acc += f" ± {100 * r['frame_acc_std']:.1f}"
            wer += f" ± {100 * r['wer_std']:.1f}"
        acc += _ci(r.get("frame_acc_ci"))
        wer += _ci(r.get("wer_ci"))
        pa, pw = (f"{paper[0]}%", f"{paper[1]}%") if paper else ("", "")
        lines.append(f"| {r['system']} | {acc} | {wer} | {r['params']:,} | {_epochs(r.get('epochs'))} | {pa} | {pw} |")
    share = f"{100 * report.get('subset_fraction', 0.03):g}%"
    lines += ["", f"## Table 5: soft targets as a regulariser ({share} of the training data; paper: 3%)", "",
              "| system | train frame acc | test frame acc | WER | epochs | paper train | paper test |",
              "|---|---|---|---|---|---|---|"]
    for r in report["table5"]:
        p = PAPER_TABLE5[r["system"]]
        lines.append(f"| {r['system']} | {_pct(r['train_frame_acc'])} | "
                     f"{_pct(r['test_frame_acc'])}{_ci(r.get('test_frame_acc_ci'))} | "
                     f"{_pct(r['wer'])}{_ci(r.get('wer_ci'))} | {_epochs(r.get('epochs'))} | {p[0]}% | {p[1]}% |")
    d = report.get("derived", {})
    lines += ["", "## Derived figures", ""]
    if d.get("gain_kept") is not None:
        lines.append(f"- The best student on dev ({d['best_student']}) keeps {100 * d['gain_kept']:.0f}%"
                     f"{_ci(d.get('gain_kept_ci'), digits=0)} of the ensemble's "
                     f"frame-accuracy gain over the mean teacher (paper: {100 * d['paper']['gain_kept']:.0f}%).")
    else:
        lines.append("- Share of the ensemble's gain kept: n/a (the ensemble did not beat the mean teacher, "
                     "or a system is missing).")
    if d.get("gain_kept_same_rule") is not None:
        lines.append(f"- Measured instead from a single hard-target model trained by the students' own rule "
                     f"(Table 5's baseline_100), the best student keeps {100 * d['gain_kept_same_rule']:.0f}%"
                     f"{_ci(d.get('gain_kept_same_rule_ci'), digits=0)} of the ensemble's gain over it.")
    if d.get("gap_recovered") is not None:
        lines.append(f"- Soft targets recover {100 * d['gap_recovered']:.0f}%{_ci(d.get('gap_recovered_ci'), digits=0)} "
                     f"of the test-accuracy gap between "
                     f"3% and 100% of the data (paper: {100 * d['paper']['gap_recovered']:.0f}%).")
    else:
        lines.append("- Share of the 3%-vs-100% gap recovered: n/a.")
    for name, t in d.get("paired_tests", {}).items():
        a, b = t["systems"]
        lines.append(f"- WER {a} - {b}: {100 * t['difference']:+.2f} points{_ci(t['ci'], digits=2)}, "
                     f"paired bootstrap p = {t['p_value']:.3f}.")
    if d.get("bootstrap"):
        bs = d["bootstrap"]
        res = d.get("wer_resolution_rel")
        lines.append(f"- Intervals: 95 %, {bs['resamples']} bootstrap resamples of the {bs['test_utterances']} test "
                     "utterances, paired across systems (test-set noise; the teachers' ± is the spread over seeds)."
                     + (f" On this test set a WER is known to ±{100 * res:.0f}% relative." if res else ""))
    dep = report.get("deployment")
    if dep:
        onnx = dep.get("onnx") or {}
        exported = (f"TorchScript and ONNX, checked against PyTorch: ONNX within {onnx['max_abs_diff']:.1e} in "
                    "log-posterior" if onnx.get("written") else "TorchScript, checked against PyTorch"
                    + (f"; no ONNX: {', '.join(onnx['skipped'])}" if onnx.get("skipped") else ""))
        lines += ["", "## Deployment: what each system costs at inference", "",
                  f"Exported model directories (`models/<system>/`: {exported}). "
                  f"Acoustic model only (the search is the same graph for all), one CPU thread, "
                  f"{dep['timing_frames']} test frames: the whole utterance in one call, and streaming-style "
                  f"(one 26-frame window a call), with torch (TorchScript)"
                  f"{' and with onnxruntime (ONNX)' if onnx.get('written') else ''}. "
                  f"Real-time factor: seconds of compute per second of audio.", "",
                  "| system | params | MFLOPs/frame | RTF whole utterance | RTF streaming, batch 1 "
                  "| ONNX Runtime RTF: whole | ONNX Runtime RTF: streaming | test WER | test frame acc |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in dep["systems"]:
            lines.append(f"| {r['system']} | {r['params']:,} | {r['mflops_per_frame']:.2f} | "
                         f"{r['whole_utterance_rtf']:.4f} | {r['streaming_batch1_rtf']:.4f} | "
                         f"{_rtf(r.get('onnx_whole_utterance_rtf'))} | {_rtf(r.get('onnx_streaming_batch1_rtf'))} | "
                         f"{_pct(r['wer'])} | {_pct(r['frame_acc'])} |")
        by = {r["system"]: r for r in dep["systems"]}
        best = dep.get("best_student")
        if best in by and "ensemble" in by:
            e, b = by["ensemble"], by[best]
            lines += ["", f"The best student on dev ({best}) needs {e['mflops_per_frame'] / b['mflops_per_frame']:.1f}x "
                          f"fewer operations per frame than the ensemble and runs "
                          f"{e['whole_utterance_rtf'] / b['whole_utterance_rtf']:.1f}x faster (whole utterance)."]
    conds = report.get("conditions") or []
    if len(conds) > 1:
        lines += ["", "## Test conditions: does the ensemble's advantage survive a shift of domain?", "",
                  "`test`: the test split; the others: the extra test sets of data.extra_test_subsets (LibriSpeech: "
                  "test-other beside test-clean), every system at the acoustic scale it chose on dev. WER (frame "
                  "accuracy) with 95 % bootstrap intervals over each set's utterances; the student is the best on "
                  "dev.", "",
                  "| condition | utts | mean teacher | ensemble | best student | ensemble WER gain | student keeps "
                  "(frame acc) |", "|---|---|---|---|---|---|---|"]
        for c in conds:
            def cell(r: dict[str, Any]) -> str:
                return (f"{_pct(r['wer'])}{_ci(r.get('wer_ci'))} ({_pct(r.get('frame_acc'))}"
                        f"{_ci(r.get('frame_acc_ci'))})")
            kept = c.get("gain_kept")
            kept_s = "n/a (no gain)" if kept is None else f"{100 * kept:.0f}%{_ci(c.get('gain_kept_ci'), digits=0)}"
            lines.append(f"| {c['condition']} | {c.get('utterances') or ''} | {cell(c['mean_teacher'])} | "
                         f"{cell(c['ensemble'])} | {c['best_student']}: {cell(c['student'])} | "
                         f"{100 * c['ensemble_wer_gain']:+.1f} points | {kept_s} |")
        lines += _scale_table(conds)
    lines += _by_group_table(d, d.get("best_student"))
    if report.get("gmm_systems"):
        lines += ["", "## GMM-HMM systems (the aligner)", "",
                  "Log-likelihood: Viterbi, per frame, of each system's final model against the reference "
                  "transcripts (dev: held-out voices). The DNN labels are the last system's pdfs.", "",
                  "| system | context | pdfs | Gaussians | train loglike/frame | dev loglike/frame | dev WER "
                  "| test WER | acoustic scale |", "|---|---|---|---|---|---|---|---|---|"]
        for r in report["gmm_systems"]:
            ll = ["n/a" if r[k] is None else f"{r[k]:.2f}" for k in ("train_loglike_per_frame", "dev_loglike_per_frame")]
            lines.append(f"| {r['system']} | {r['context']} | {r['num_pdfs']} | {r['num_gaussians']} | {ll[0]} | "
                         f"{ll[1]} | {_pct(r['dev_wer'])} | {_pct(r['wer'])} | {r['acoustic_scale']:g} |")
    elif report.get("gmm"):
        lines.append(f"- GMM-HMM sanity baseline: {_pct(report['gmm']['wer'])} WER.")
    lines += _lm_table(report.get("lm"))
    lines += ["", "## Corpus and labels", "",
              "Hours, utterances and speakers count what training used (the utterances in the shards); "
              "\"listed by prepare\" is what the corpus reader accepted, before the later losses below.", "",
              "| split | hours | utterances | speakers | listed by prepare |", "|---|---|---|---|---|"]
    for split, v in report["corpus"].get("splits", {}).items():
        lines.append(f"| {split} | {v.get('hours')} | {v.get('utterances')} | {v.get('speakers')} | "
                     f"{v.get('listed_by_prepare', v.get('utterances'))} |")
    lab = report["labels"]
    lines += ["", f"HMM states: {lab.get('num_pdfs')} ({lab.get('context')}, from {lab.get('source')}).", ""]
    lines += _lost_table(report["corpus"].get("lost", {}))
    lines += ["## Wall time per stage", "", "| stage | seconds | of which |", "|---|---|---|"]
    parts = report.get("timing_parts", {})
    lines += [f"| {k} | {v} | " + "; ".join(f"{name} {secs} s" for name, secs in parts.get(k, {}).items()) + " |"
              for k, v in report["timing"].items()]
    lines += ["", "Plots: `frame_acc_wer_vs_T.png`, `table5_curves.png`.", ""]
    return "\n".join(lines)


def _lm_table(lm: dict[str, Any] | None) -> list[str]:
    """The decoding LM: vocabulary, OOV rate and perplexity per split (report.json's ``lm``)."""
    if not lm:
        return []
    size = lm.get("vocabulary_size")
    lines = ["", "## Language model and vocabulary", "",
             f"Decoding vocabulary: {size:,} words, the LM's plus the training transcripts' (never dev or test's: "
             f"a word outside it is an error no search avoids, counted as OOV). LM: {lm.get('source')}"
             f"{', order ' + str(lm['order']) if lm.get('order') else ''}. Perplexity as SRILM's "
             "(OOVs not scored, `</s>` counted)." if size is not None else "", "",
             "| split | tokens | OOV tokens | OOV rate | perplexity |", "|---|---|---|---|---|"]
    for split in lm.get("tokens", {}):
        ppl = lm["perplexity"].get(split)
        lines.append(f"| {split} | {lm['tokens'][split]:,} | {lm['oov_tokens'][split]:,} | "
                     f"{100 * lm['oov_rate'][split]:.2f}% | {'n/a' if ppl is None else f'{ppl:.1f}'} |")
    return lines


def _by_group_table(derived: dict[str, Any], best: str | None) -> list[str]:
    """The test WER of each group of voices the corpus defines (derived's ``test_by_<kind>``; the
    synthetic corpus: each voice family's, when its test set mixes them)."""
    kind = next((k[len("test_by_"):] for k in derived if k.startswith("test_by_")), None)
    rows = derived.get(f"test_by_{kind}")
    if not rows:
        return []
    lines = ["", f"## Test WER by {kind}", "",
             f"The usual test set split by the {kind} of each held-out voice: WER with 95 % bootstrap "
             f"intervals over that {kind}'s test utterances; the student is the best on dev ({best}).", "",
             f"| {kind} | utts | mean teacher | ensemble | best student |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{_pct(r[k]['wer'])}{_ci(r[k].get('wer_ci'))}" if k in r else "n/a"
                 for k in ("mean_teacher", "ensemble", "best_student")]
        lines.append(f"| {r[kind]} | {r['utterances']} | " + " | ".join(cells) + " |")
    return lines


def _lost_table(account: dict[str, Any]) -> list[str]:
    """report.md's "Utterances lost, by stage and reason" (prepare's rows count input files and lines)."""
    lines = ["## Utterances lost, by stage and reason", ""]
    rows = [(split, r) for split, a in account.items() for r in a.get("rows", [])]
    if not rows:
        return lines + ["None: every utterance of the corpus reached the shards.", ""]
    lines += ["| split | stage | reason | count | first named |", "|---|---|---|---|---|"]
    for split, r in rows:
        first = r["examples"][0] if r.get("examples") else ""
        lines.append(f"| {split} | {r['stage']} | {r['reason']} | {r['count']} | {first.replace('|', '/')} |")
    return lines + [""]


def plot_vs_temperature(report: dict[str, Any], out: Path) -> None:
    """Frame accuracy and WER of the students against T, with teacher and ensemble as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = [r for r in report["table1"] if r["system"].startswith("distilled_T")]
    ts = [float(r["system"][len("distilled_T"):]) for r in rows]
    by = {r["system"]: r for r in report["table1"]}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "frame_acc", "test frame accuracy (%)"), (axes[1], "wer", "test WER (%)")):
        ax.plot(ts, [100 * (r[key] or float("nan")) for r in rows], "o-", label="distilled student")
        for name, style in (("baseline_mean", "--"), ("ensemble", ":")):
            if name in by and by[name][key] is not None:
                ax.axhline(100 * by[name][key], linestyle=style, color="gray" if name == "baseline_mean" else "k",
                           label="mean teacher" if name == "baseline_mean" else "ensemble")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(ts or [1])
        ax.set_xticklabels([f"{t:g}" for t in ts] or ["1"])
        ax.set_xlabel("temperature T")
        ax.set_ylabel(label)
        ax.legend()
    fig.tight_layout()
    _save_fig(fig, out)


def plot_table5_curves(curves: dict[str, list[dict[str, Any]]], out: Path, fraction: float = 0.03) -> None:
    """Per-epoch training (running) and held-out frame accuracy of the 3% hard and soft runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, color in (("baseline_3", "tab:red"), ("soft_3", "tab:blue")):
        hist = curves.get(name, [])
        epochs = [h.get("epoch", i) + 1 for i, h in enumerate(hist)]
        train = [100 * h["train_frame_acc_running"] for h in hist if "train_frame_acc_running" in h]
        held = [100 * h[k] for h in hist for k in ("test_frame_acc", "dev_frame_acc") if k in h][: len(hist)]
        heldname = "test" if hist and "test_frame_acc" in hist[0] else "dev"
        if train:
            ax.plot(epochs[: len(train)], train, "o-", color=color, label=f"{name} train")
        if held:
            ax.plot(epochs[: len(held)], held, "s--", color=color, label=f"{name} {heldname}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("frame accuracy (%)")
    ax.set_title(f"{100 * fraction:g}% of the training data: hard vs soft targets")
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    _save_fig(fig, out)


def _save_fig(fig: Any, out: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def table5_curves(paths: RunPaths) -> dict[str, list[dict[str, Any]]]:
    return {name: _metrics(TrainRunDir(paths.table5_dir(name)).metrics).get("history", [])
            for name in ("baseline_3", "soft_3")}


def write_report(report: dict[str, Any], paths: RunPaths, curves: dict[str, list[dict[str, Any]]]) -> None:
    validate_report(report)
    write_json(paths.report_json, report)
    write_text(paths.report_md, render_markdown(report))
    plot_vs_temperature(report, paths.plot_vs_temperature)
    plot_table5_curves(curves, paths.plot_table5_curves, report.get("subset_fraction", 0.03))


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """report.json, report.md and the plots from the markers and decode summaries."""
    report = build_report(cfg, paths)
    write_report(report, paths, table5_curves(paths))
    return {"report_json": paths.report_json.name, "table1_rows": len(report["table1"]),
            "table5_rows": len(report["table5"]), "derived": report["derived"]}


def _scale_table(conds: list[dict[str, Any]]) -> list[str]:
    """Each condition's WER at every acoustic scale of the dev grid (the conditions stage's
    ``wer_by_scale``): a shifted domain may want another scale than the one dev chose."""
    rows = [c for c in conds if c["mean_teacher"].get("wer_by_scale")]
    if not rows:
        return []
    out = ["", "WER at each acoustic scale of the dev grid (the table above: each system's choice on dev):", "",
           "| condition | acoustic scale | mean teacher | ensemble | best student |", "|---|---|---|---|---|"]
    for c in rows:
        for g in sorted(c["mean_teacher"]["wer_by_scale"], key=float):
            cells = [_pct(c[who].get("wer_by_scale", {}).get(g)) for who in ("mean_teacher", "ensemble", "student")]
            out.append(f"| {c['condition']} | {g} | {' | '.join(cells)} |")
    return out
