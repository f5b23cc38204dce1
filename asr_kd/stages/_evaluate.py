"""Evaluate a finished run's systems on new data, without retraining and without touching the run.

Everything goes to ``<exp>/eval/<name>/`` (:class:`asr_kd.paths.EvalDir`); the run directory is only read:

1. the utterances (a manifest given by the caller, e.g. ``python -m asr_kd.evaluate`` reading a
   LibriSpeech-layout corpus);
2. features with the run's settings (Kaldi fbank, CMVN as the run: per speaker of the new data, or
   the training set's global statistics) and the GMM's MFCCs;
3. frame labels from the run's final GMM-HMM, aligned to the reference transcripts; an utterance
   with a word outside the run's lexicon, or that does not align, is decoded (it counts in WER) but
   has no labels (it does not count in frame accuracy), and is listed in the report;
4. every chosen system decoded at the acoustic scale it chose on the run's dev set;
5. ``report.json`` / ``report.md``: frame accuracy and WER with 95 % bootstrap intervals over the
   utterances, and WER per speaker.

Re-running skips finished work: features and labels are kept in ``data.npz`` under a key of the
utterances and the run's settings; a system whose summary exists for the same key is not decoded
again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from asr_kd.config import RecipeConfig, to_dict
from asr_kd.work import key as work_key
from asr_kd.data.manifest import Utterance
from asr_kd.fileio import atomic_path, read_json, write_json, write_text
from asr_kd.files import EvalDir
from asr_kd.paths import RunPaths
from asr_kd.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class EvalData:
    utts: list[str]
    speakers: dict[str, str]
    feats: dict[str, np.ndarray]  # (T, D) normalised fbank
    labels: dict[str, np.ndarray]  # (T,) pdf ids; only aligned utterances
    refs: dict[str, list[str]]
    unlabelled: dict[str, str]  # utt -> why it has no frame labels
    lost: dict[str, str]  # utt -> why it is not evaluated at all (unreadable audio, ...)


def data_key(cfg: RecipeConfig, paths: RunPaths, utts: Sequence[Utterance]) -> str:
    """What the features and labels depend on: the utterances and the run's feature/GMM settings."""
    gmm = paths.final_mdl
    return work_key({"utts": [(u.id, u.speaker, u.audio, u.text) for u in utts], "features": to_dict(cfg.features),
                        "sample_rate": cfg.data.sample_rate, "gmm": [gmm.stat().st_size, gmm.stat().st_mtime_ns]})


def prepare_data(cfg: RecipeConfig, paths: RunPaths, ep: EvalDir, utts: Sequence[Utterance]) -> EvalData:
    """Features and GMM labels of ``utts`` (read back from ``data.npz`` when its key matches)."""
    key = data_key(cfg, paths, utts)
    if ep.data.exists() and ep.data_info.exists() and read_json(ep.data_info).get("key") == key:
        log.info("eval: features and labels of %d utterances are done, reusing %s", len(utts), ep.data)
        return _load_data(ep)
    data = _compute_data(cfg, paths, utts)
    arrays = {f"feats/{u}": data.feats[u] for u in data.utts}
    arrays.update({f"labels/{u}": data.labels[u] for u in data.labels})
    with atomic_path(ep.data) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    write_json(ep.data_info, {"key": key, "utts": data.utts, "speakers": data.speakers, "refs": data.refs,
                              "unlabelled": data.unlabelled, "lost": data.lost})
    return data


def _load_data(ep: EvalDir) -> EvalData:
    info = read_json(ep.data_info)
    with np.load(ep.data) as z:
        feats = {u: z[f"feats/{u}"] for u in info["utts"]}
        labels = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("labels/")}
    return EvalData(info["utts"], info["speakers"], feats, labels, info["refs"], info["unlabelled"], info["lost"])


def _compute_data(cfg: RecipeConfig, paths: RunPaths, utts: Sequence[Utterance]) -> EvalData:
    from asr_kd.stages._align import AlignSplit, add_graphs, train_options
    from asr_kd.align.feats import gmm_features
    from asr_kd.align.model import load_model
    from asr_kd.align.viterbi import realign
    from asr_kd.data.features import utterance_features
    from asr_kd.data.lang import load_lang
    from asr_kd.progress import progress

    fbank, mfcc, lost, speakers = {}, {}, {}, {}
    for u in progress(utts, desc="eval features", unit="utt"):
        f = utterance_features(u, cfg.features, cfg.data.sample_rate)
        if f.error:
            lost[u.id] = f"{f.reason}: {f.error}"
            continue
        fbank[u.id], mfcc[u.id], speakers[u.id] = f.fbank, f.mfcc, u.speaker
    if not fbank:
        raise InputError(f"none of the {len(utts)} utterances could be read (e.g. {next(iter(lost.values()))})")
    feats = _normalise(cfg, paths, fbank, speakers)
    lang = load_lang(paths.decode_lang)
    model = load_model(paths.align)
    refs = {u.id: u.words for u in utts if u.id in fbank}
    gmm = AlignSplit(utt_ids=list(fbank), feats=gmm_features(mfcc, speakers), texts=refs, graphs={}, failed={})
    add_graphs(gmm, lang, model)
    opts = replace(train_options(cfg.align), last_resort_beam=cfg.align.final_beam, progress=False)
    result = realign(model, gmm.graphs, gmm.feats, opts, list(lang.silence_phones), desc="eval align")
    tid2pdf = model.tid2pdf()
    labels = {u: tid2pdf[a] for u, a in result.alignments.items() if len(a) == len(feats[u])}
    unlabelled = {**gmm.failed, **result.failed}
    unlabelled.update({u: "alignment length differs from the features" for u in result.alignments if u not in labels})
    ids = [u.id for u in utts if u.id in fbank]
    return EvalData(ids, speakers, feats, labels, refs, unlabelled, lost)


def _normalise(cfg: RecipeConfig, paths: RunPaths, fbank: dict[str, np.ndarray],
               speakers: dict[str, str]) -> dict[str, np.ndarray]:
    """CMVN as the run's networks were trained: per speaker of the new data, global, or none."""
    from asr_kd.data.features import Stats, load_cmvn

    mode = cfg.features.cmvn
    if mode == "none":
        return {u: f.astype(np.float32) for u, f in fbank.items()}
    if mode == "global":
        mean, std = load_cmvn(paths.cmvn, "train").global_stats.mean_std()
        return {u: ((f - mean) / std).astype(np.float32) for u, f in fbank.items()}
    stats: dict[str, Any] = {}
    for u, f in fbank.items():
        stats.setdefault(speakers[u], Stats.zeros(f.shape[1])).add(f)
    ms = {s: st.mean_std() for s, st in stats.items()}
    return {u: ((f - ms[speakers[u]][0]) / ms[speakers[u]][1]).astype(np.float32) for u, f in fbank.items()}


def evaluate_systems(cfg: RecipeConfig, paths: RunPaths, ep: EvalDir, data: EvalData,
                     systems: Sequence[str] | None = None, scale_grid: Sequence[float] = ()) -> dict[str, Any]:
    """Decode every chosen system (skipping those already done for this data) and write the report.

    Each system is scored at the acoustic scale it chose on dev (``wer``; ``scale_from``: dev);
    with ``scale_grid`` it is also searched at each of those scales (``wer_by_scale``, the
    posteriors computed once), which shows how far the choice is from the best scale for this data."""
    from asr_kd.align.model import load_model
    from asr_kd.decoding.scoring import score, write_scoring
    from asr_kd.decoding.search import SearchConfig, read_hclg_decoder
    from asr_kd.decoding.pool import SearchPool
    from asr_kd.stages._decode import (
        EvalSplit,
        Search,
        discover_systems,
        dnn_chunks,
        forward_device,
        posterior_fn,
        run_split,
        train_log_priors,
    )

    known = {s.name: s for s in discover_systems(cfg, paths)}
    chosen = list(systems) if systems else list(known)
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise InputError(f"unknown system(s) {', '.join(unknown)}; this run has {', '.join(known)}")
    key = read_json(ep.data_info)["key"]
    gmm = load_model(paths.align)
    search = SearchConfig.of(cfg.decode)
    decoder = read_hclg_decoder(paths.graph, gmm.trans_model, search)
    log_prior = train_log_priors(paths, gmm.num_pdfs)
    split = EvalSplit(ep.root.name, data.utts, data.feats, data.labels, data.refs)
    grid = sorted({float(g) for g in scale_grid})
    rows = {}
    device = forward_device(cfg)
    with SearchPool({"dnn": decoder.decode_log_likelihoods}, cfg.decode.num_jobs) as pool:
        for name in chosen:
            run_summary = paths.decode_summary(name)
            if not run_summary.exists():
                raise InputError(f"{run_summary} is missing: the run has not decoded {name}, so it has no acoustic "
                                 "scale; finish the run's decode stage first")
            scale_from, scale = "dev", float(read_json(run_summary)["acoustic_scale"])
            st = run_summary.stat()  # rewritten whenever the run decodes the system again (e.g. retrained)
            model_key = f"{st.st_size}-{st.st_mtime_ns}"
            out = ep.summary(name)
            done = read_json(out) if out.exists() else {}
            if (done.get("data_key") == key and done.get("model_key") == model_key
                    and done.get("acoustic_scale") == scale and done.get("scale_from", "dev") == scale_from
                    and {f"{g:g}" for g in grid} <= set(done.get("wer_by_scale", {}))):
                log.info("eval %s: done, skipping", name)
                rows[name] = done
                continue
            fn, params, _ = posterior_fn(known[name], cfg, device)
            t0 = time.time()
            scales = sorted({scale, *grid})
            search = Search(pool, "dnn", cfg.decode.chunk_utts)
            res = run_split(name, search, split, dnn_chunks(fn, split, log_prior), scales)
            hyps = {h.utt: h.words for h in res.hyps[scale]}
            stats = write_scoring(ep.system_dir(name), data.refs, hyps,
                                  title=f"{name} on {ep.root.name}, scale {scale:g}")
            _, aligned = score(data.refs, hyps)
            per_utt = {a.utt: [a.stats.errors, a.stats.ref_words, *res.utt_frames.get(a.utt, (0, 0))] for a in aligned}
            rows[name] = {"system": name, "data_key": key, "model_key": model_key, "acoustic_scale": scale,
                          "scale_from": scale_from,
                          "wer": stats.wer,
                          "frame_acc": res.frame_acc, "params": params, "per_utt": per_utt,
                          "seconds": round(time.time() - t0, 1)}
            if grid:
                rows[name]["wer_by_scale"] = {f"{g:g}": score(data.refs, {h.utt: h.words for h in res.hyps[g]})[0].wer
                                              for g in scales}
            write_json(out, rows[name])
    report = build_eval_report(ep.root.name, data, [rows[n] for n in chosen])
    write_json(ep.report_json, report)
    write_text(ep.report_md, render_eval_markdown(report))
    return report


def build_eval_report(name: str, data: EvalData, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per system: WER and frame accuracy with 95 % bootstrap intervals; WER per speaker."""
    from asr_kd.decoding.stats import Bootstrap, UttCounts, interval

    boot = Bootstrap(data.utts)
    systems = []
    for r in rows:
        table = np.asarray([r["per_utt"][u] for u in data.utts], dtype=np.float64)  # (n, 4)
        c = UttCounts(tuple(data.utts), *table.T)
        per_spk: dict[str, list[float]] = {}
        for u, (err, words, _h, _f) in zip(data.utts, table):
            e = per_spk.setdefault(data.speakers[u], [0.0, 0.0])
            e[0] += err
            e[1] += words
        systems.append({"system": r["system"], "wer": r["wer"], "wer_ci": interval(boot.wer(c)),
                        "frame_acc": r["frame_acc"],
                        "frame_acc_ci": interval(boot.frame_acc(c)) if r["frame_acc"] is not None else None,
                        "acoustic_scale": r["acoustic_scale"], "scale_from": r.get("scale_from", "dev"),
                        "wer_per_speaker": {s: v[0] / max(v[1], 1.0) for s, v in sorted(per_spk.items())},
                        **({"wer_by_scale": r["wer_by_scale"]} if "wer_by_scale" in r else {})})
    return {"name": name, "utterances": len(data.utts), "speakers": len(set(data.speakers.values())),
            "labelled_utterances": len(data.labels), "unlabelled": data.unlabelled, "lost": data.lost,
            "systems": systems}


def render_eval_markdown(report: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    def ci(v: list[float] | None) -> str:
        return "" if not v else f" [{100 * v[0]:.1f}, {100 * v[1]:.1f}]"

    lines = [f"# Evaluation on {report['name']}", "",
             f"{report['utterances']} utterances, {report['speakers']} speakers; frame accuracy on the "
             f"{report['labelled_utterances']} aligned to their transcripts by the run's GMM-HMM. 95 % intervals: "
             "bootstrap over utterances.", "",
             "| system | WER | frame acc | acoustic scale |", "|---|---|---|---|"]
    for s in report["systems"]:
        lines.append(f"| {s['system']} | {pct(s['wer'])}{ci(s['wer_ci'])} | {pct(s['frame_acc'])}"
                     f"{ci(s['frame_acc_ci'])} | {s['acoustic_scale']:g} |")
    grid = sorted({g for s in report["systems"] for g in s.get("wer_by_scale", {})}, key=float)
    if grid:
        lines += ["", "## WER at each acoustic scale", "",
                  "Each system searched again at every scale of the dev grid (the table above: the scale it chose "
                  "on dev).", "",
                  "| system | " + " | ".join(grid) + " |", "|---|" + "---|" * len(grid)]
        for s in report["systems"]:
            lines.append(f"| {s['system']} | " + " | ".join(pct(s.get("wer_by_scale", {}).get(g)) for g in grid) + " |")
    speakers = sorted({spk for s in report["systems"] for spk in s["wer_per_speaker"]})
    lines += ["", "## WER per speaker", "", "| speaker | " + " | ".join(s["system"] for s in report["systems"]) + " |",
              "|---|" + "---|" * len(report["systems"])]
    for spk in speakers:
        lines.append(f"| {spk} | " + " | ".join(pct(s["wer_per_speaker"].get(spk)) for s in report["systems"]) + " |")
    for title, items in (("Without frame labels (in WER only)", report["unlabelled"]),
                         ("Not evaluated", report["lost"])):
        if items:
            lines += ["", f"## {title}: {len(items)}", ""] + [f"- {u}: {why}" for u, why in sorted(items.items())]
    return "\n".join(lines) + "\n"


def condition_summary(paths: RunPaths, ep: EvalDir, report: dict[str, Any], data: EvalData) -> dict[str, Any]:
    """A test condition as the paper's comparison: the mean teacher, the ensemble and the best
    student (best dev frame accuracy in the run's decode stage), each with WER and frame accuracy
    and their 95 % bootstrap intervals over the condition's utterances (paired across systems);
    the ensemble's gain over the mean teacher and the share of it the student keeps."""
    from asr_kd.decoding.stats import Bootstrap, UttCounts, interval, mean_over, ratio_of_gains

    boot = Bootstrap(data.utts)
    counts = {}
    for s in report["systems"]:
        per_utt = read_json(ep.summary(s["system"]))["per_utt"]
        table = np.asarray([per_utt[u] for u in data.utts], dtype=np.float64)  # (n, 4)
        counts[s["system"]] = UttCounts(tuple(data.utts), *table.T)
    teachers = [n for n in counts if n.startswith("teacher-")]
    students = [n for n in counts if n.startswith("distilled_T")]
    if not teachers or "ensemble" not in counts or not students:
        raise InputError(f"condition {report['name']}: needs the teachers, the ensemble and a student "
                         f"decoded; has {', '.join(counts)}")
    dev_acc = {n: read_json(paths.decode_summary(n)).get("dev_frame_acc") or 0.0 for n in students}
    best = max(students, key=lambda n: dev_acc[n])
    wer = {n: boot.wer(c) for n, c in counts.items()}
    acc = {n: boot.frame_acc(c) for n, c in counts.items()}
    by = {s["system"]: s for s in report["systems"]}

    def point(names: list[str], key: str) -> float | None:
        vals = [by[n][key] for n in names]
        return None if any(v is None for v in vals) else float(np.mean(vals))

    rows = {}
    for label, names in (("mean_teacher", teachers), ("ensemble", ["ensemble"]), ("student", [best])):
        w, a = mean_over([wer[n] for n in names]), mean_over([acc[n] for n in names])
        fa = point(names, "frame_acc")
        rows[label] = {"systems": names, "acoustic_scales": [by[n]["acoustic_scale"] for n in names],
                       "wer": point(names, "wer"), "wer_ci": interval(w),
                       "frame_acc": fa, "frame_acc_ci": interval(a) if fa is not None else None}
        grids = [by[n].get("wer_by_scale") for n in names]
        if all(grids):
            rows[label]["wer_by_scale"] = {g: float(np.mean([x[g] for x in grids]))
                                           for g in grids[0] if all(g in x for x in grids)}
        if label == "mean_teacher":
            rows[label]["wer_std"] = float(np.std([by[n]["wer"] for n in names], ddof=1)) if len(names) > 1 else 0.0
    t_acc, e_acc, s_acc = (mean_over([acc[n] for n in ns]) for ns in (teachers, ["ensemble"], [best]))
    t_wer, e_wer, s_wer = (mean_over([wer[n] for n in ns]) for ns in (teachers, ["ensemble"], [best]))
    out: dict[str, Any] = {"utterances": report["utterances"], "speakers": report["speakers"],
                           "labelled_utterances": report["labelled_utterances"], "best_student": best,
                           "scales_from": sorted({s.get("scale_from", "dev") for s in report["systems"]}), **rows}
    mt, en, st = rows["mean_teacher"], rows["ensemble"], rows["student"]
    out["ensemble_wer_gain"] = mt["wer"] - en["wer"]
    out["ensemble_wer_gain_ci"] = interval(t_wer - e_wer)
    out["wer_gain_kept"] = (mt["wer"] - st["wer"]) / out["ensemble_wer_gain"] if out["ensemble_wer_gain"] > 0 else None
    out["wer_gain_kept_ci"] = interval(ratio_of_gains(t_wer - s_wer, t_wer - e_wer))
    if None not in (mt["frame_acc"], en["frame_acc"], st["frame_acc"]):
        gain = en["frame_acc"] - mt["frame_acc"]
        out["ensemble_frame_acc_gain"] = gain
        out["ensemble_frame_acc_gain_ci"] = interval(e_acc - t_acc)
        out["gain_kept"] = (st["frame_acc"] - mt["frame_acc"]) / gain if gain > 0 else None
        out["gain_kept_ci"] = interval(ratio_of_gains(s_acc - t_acc, e_acc - t_acc))
    return out

