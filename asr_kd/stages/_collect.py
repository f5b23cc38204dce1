"""A run's stage markers and decode summaries, read into the report's rows (:mod:`.rows`)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from asr_kd.accounting import loss_account
from asr_kd.config import RecipeConfig
from asr_kd.decoding.report.rows import (
    ABSENT, Condition, Corpus, CorpusSplit, GmmBaseline, GmmRow, Labels, LM_METRICS, LmSection, Table1Row, Table5Row,
    TrainCurve,
)
from asr_kd.decoding.stats import UttCounts
from asr_kd.fileio import read_json
from asr_kd.files import TABLE5_RUNS, TrainRunDir
from asr_kd.paths import STAGE_NAMES, RunPaths
from asr_kd.runner import marker_summary


def _read_summary(paths: RunPaths, name: str) -> dict[str, Any] | None:
    p = paths.decode_summary(name)
    return read_json(p) if p.exists() else None


def _metrics(path: Path | None) -> dict[str, Any]:
    return read_json(path) if path is not None and path.exists() else {}


def epochs_used(paths: RunPaths) -> dict[str, int | float | None]:
    """Epochs each system trained for (the training stages' summaries): what the convergence rule used."""
    out: dict[str, int | float | None] = {}
    teachers = marker_summary(paths, "teachers").get("teachers", [])
    if teachers:
        out["baseline"] = teachers[0].get("epochs")
        epochs = [t["epochs"] for t in teachers if t.get("epochs") is not None]
        out["baseline_mean"] = statistics.fmean(epochs) if epochs else None
    distill = marker_summary(paths, "distill")
    for st in distill.get("students", []):
        out[f"distilled_T{st['T']:g}"] = st.get("epochs")
    for row in distill.get("table5", []):
        out[f"table5:{row['system']}"] = row.get("epochs")
    return out


def table1_rows(cfg: RecipeConfig, paths: RunPaths) -> list[Table1Row]:
    """Table 1: baseline (teacher 0), baseline_mean (+ std over teachers), ensemble, distilled_T<T>."""
    rows: list[Table1Row] = []
    epochs = epochs_used(paths)

    def used(system: str) -> Any:
        return epochs[system] if system in epochs else ABSENT

    teachers = [s for k in range(cfg.teachers.num_teachers) if (s := _read_summary(paths, f"teacher-{k}"))]
    t0 = _read_summary(paths, "teacher-0")
    if t0:
        rows.append(Table1Row("baseline", t0["frame_acc"], t0["wer"], t0["params"],
                              dev_frame_acc=t0.get("dev_frame_acc"), epochs=used("baseline")))
    if teachers:
        accs = [t["frame_acc"] for t in teachers if t["frame_acc"] is not None]
        wers = [t["wer"] for t in teachers]
        rows.append(Table1Row(
            "baseline_mean", statistics.fmean(accs) if accs else None, statistics.fmean(wers), teachers[0]["params"],
            frame_acc_std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
            wer_std=statistics.stdev(wers) if len(wers) > 1 else 0.0, num_teachers=len(teachers),
            epochs=used("baseline_mean")))
    ens = _read_summary(paths, "ensemble")
    if ens:
        rows.append(Table1Row("ensemble", ens["frame_acc"], ens["wer"], ens["params"] * cfg.teachers.num_teachers,
                              dev_frame_acc=ens.get("dev_frame_acc"), epochs=used("ensemble")))
    for t in cfg.distill.temperatures:
        s = _read_summary(paths, f"distilled_T{t:g}")
        if s:
            rows.append(Table1Row(f"distilled_T{t:g}", s["frame_acc"], s["wer"], s["params"], temperature=t,
                                  dev_frame_acc=s.get("dev_frame_acc"), epochs=epochs.get(f"distilled_T{t:g}")))
    return rows


def table5_rows(cfg: RecipeConfig, paths: RunPaths) -> list[Table5Row]:
    """Table 5: train/test frame accuracy and WER of the 100%-hard, 3%-hard and 3%-soft runs."""
    rows = []
    epochs = epochs_used(paths)
    for name in TABLE5_RUNS:
        own = TrainRunDir(paths.table5_dir(name))
        decoded = name if cfg.distill.trains_table5_run(name) else "teacher-0"
        run = own if decoded == name else TrainRunDir(paths.teacher_dirs(cfg.teachers.num_teachers)[0])
        s = _read_summary(paths, decoded)
        if s is None:
            continue
        train_acc = _metrics(run.metrics).get("train_frame_acc")
        rows.append(Table5Row(name, train_acc if isinstance(train_acc, float) else None, s["frame_acc"], s["wer"],
                              decoded_as=decoded, epochs=epochs.get(f"table5:{name}")))
    return rows


def utt_counts(paths: RunPaths, systems: list[str]) -> dict[str, UttCounts]:
    """The per-utterance counts of each decoded system that has them (what the bootstrap resamples)."""
    counts: dict[str, UttCounts] = {}
    for name in systems:
        f = paths.decode_utt_counts(name)
        if name not in counts and f.exists():
            counts[name] = UttCounts.from_json(read_json(f))
    return counts


def gmm_baseline(paths: RunPaths) -> GmmBaseline | None:
    gmm = _read_summary(paths, "gmm")
    return GmmBaseline(gmm["wer"], gmm["acoustic_scale"]) if gmm else None


def gmm_rows(paths: RunPaths) -> list[GmmRow]:
    """The align stage's GMM-HMMs side by side (monophone first): size, Viterbi log-likelihood per
    frame of train and dev under each system's final model, dev and test WER."""
    align = marker_summary(paths, "align")
    rows = []
    for name, loglikes in (("gmm_mono", align.get("monophone", {})), ("gmm", align)):
        dec = _read_summary(paths, name)
        if dec is None:
            continue
        rows.append(GmmRow(name, dec.get("context"), dec.get("num_pdfs"), dec.get("num_gaussians"),
                           loglikes.get("train_loglike_per_frame"), loglikes.get("dev_loglike_per_frame"),
                           dec.get("dev", {}).get("wer"), dec["wer"], dec["acoustic_scale"]))
    return rows


def used_corpus(paths: RunPaths, split: str) -> CorpusSplit | None:
    """Hours, utterances and speakers of what training used: the utterances in ``split``'s shards
    (durations and speakers from the manifest); None before the shards stage."""
    from asr_kd.data.manifest import read_manifest

    index, manifest = paths.shard_index(split), paths.manifest(split)
    if not (index.exists() and manifest.exists()):
        return None
    ids = {utt for shard in read_json(index)["shards"] for utt, _ in shard["utts"]}
    utts = [u for u in read_manifest(manifest) if u.id in ids]
    return CorpusSplit(round(sum(u.duration for u in utts) / 3600, 4), len(ids), len({u.speaker for u in utts}))


def corpus_section(paths: RunPaths) -> Corpus:
    """Per split: what training used (the shards), what prepare listed, and the one account of
    every utterance lost on the way, by stage and reason (:mod:`asr_kd.accounting`)."""
    prep = marker_summary(paths, "prepare")
    splits: dict[str, CorpusSplit] = {}
    for split, v in prep.get("splits", {}).items():
        used = used_corpus(paths, split)
        row = used or CorpusSplit(v.get("hours"), v.get("utterances"), v.get("speakers"))
        row.listed_by_prepare, row.counted_from = v.get("utterances"), "shards" if used else "prepare"
        splits[split] = row
    account = {split: a for split, a in loss_account(paths).items() if split in splits}
    return Corpus(splits, account, lost_total=sum(r["count"] for a in account.values() for r in a["rows"]),
                  skipped={s: v.get("skipped") for s, v in prep.get("splits", {}).items()},
                  skipped_total=prep.get("skipped_total"), lm_text=prep.get("lm_text"))


def labels_section(paths: RunPaths) -> Labels:
    align = marker_summary(paths, "align")
    return Labels(align.get("num_pdfs"), align.get("context"),
                  align.get("source", "builtin GMM-HMM aligner" if align else None))


def lm_section(paths: RunPaths) -> LmSection | None:
    """The decoding LM (report.json's ``lm``, :class:`.rows.LmSection`) from the graph stage, with
    the extra test sets (``data.extra_test_subsets``) from the conditions stage; None for a run whose
    graph stage predates it."""
    g = marker_summary(paths, "graph").get("lm")
    if not g or "splits" not in g:
        return None
    vocab = g.get("vocabulary") or {}
    splits = dict(g["splits"])
    for name, c in marker_summary(paths, "conditions").get("conditions", {}).items():
        if c.get("lm"):  # an extra test set (data.extra_test_subsets), e.g. test-other
            splits[name] = c["lm"]
    return LmSection(g.get("source"), g.get("order"), vocab.get("in_graph"), vocab.get("rule"),
                     **{metric: {split: v.get(metric) for split, v in splits.items()} for metric in LM_METRICS})


def timing_section(paths: RunPaths) -> dict[str, float | None]:
    """Wall time of each stage that ran, in pipeline order."""
    return {stage: read_json(paths.marker(stage)).get("wall_time_s") for stage in STAGE_NAMES
            if paths.marker(stage).exists()}


def timing_parts(paths: RunPaths) -> dict[str, dict[str, float]]:
    """The optional work inside a stage's wall time, where a stage measured it: generating the
    synthetic corpus and the augmented copies (prepare)."""
    prep = marker_summary(paths, "prepare")
    parts = {"prepare": {"synthetic corpus generation": prep.get("synthetic_corpus_s"),
                         "augmented copies": prep.get("augment", {}).get("augment_s")}}
    return {stage: {k: v for k, v in p.items() if v is not None} for stage, p in parts.items()
            if any(v is not None for v in p.values())}


def extra_conditions(paths: RunPaths) -> list[Condition]:
    """The conditions stage's extra test sets (e.g. ``test-other``)."""
    return [Condition.from_json({"condition": name, **c}, f"conditions.{name}")
            for name, c in marker_summary(paths, "conditions").get("conditions", {}).items()]


def table5_curves(paths: RunPaths) -> dict[str, TrainCurve]:
    """The dev checks of the Table-5 subset runs."""
    metrics = {name: _metrics(TrainRunDir(paths.table5_dir(name)).metrics) for name in ("baseline_3", "soft_3")}
    return {name: TrainCurve(m.get("history", []), m.get("best_epoch")) for name, m in metrics.items()}
