"""Why does a student's WER not follow its frame accuracy? Measures, on a finished run, what the
hybrid score of each system depends on besides the argmax (issue 33, item 2):

- the state priors in ``log p(s|x) - log p(s)``: the training alignments' label counts (the recipe's)
  against each model's own mean posterior over training frames (Kaldi's ``adjust-priors``);
- the acoustic scale: test WER at every scale of a grid, beside the one dev chooses;
- calibration of the test-frame posteriors: frame accuracy, cross-entropy to the labels, mean entropy,
  expected calibration error (15 equal-width confidence bins);
- the choice of T: each student's dev frame accuracy, dev WER and test WER (the run's decode summaries).

    python recipes/librispeech/local/wer_study.py --exp-dir exp/tiny --out docs/experiments/wer-study \
        [--systems teacher-0,teacher-1,ensemble,distilled_T2] [--scales 0.06,0.08,0.11,0.14] \
        [--dev-utts 200] [--test-utts 0] [--prior-utts 200] [--jobs 2]

Writes ``OUT/wer_study.json`` and ``OUT/wer_study.md``. Searches with the run's graph and beams; the
run itself is not changed. Cost: one forward per system and prior, and per system
(scales x (dev + test)) searches with the label-count prior, (scales x dev + test) with its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from asr_kd.align.model import load_model
from asr_kd.config import apply_overrides, from_dict
from asr_kd.decoding.pool import SearchPool
from asr_kd.decoding.scoring import score
from asr_kd.decoding.search import SearchConfig, log_priors_from_counts, read_hclg_decoder
from asr_kd.stages._decode import (
    Search, best_scale, dnn_chunks, discover_systems, posterior_fn, read_split, run_split, subset, train_log_priors,
)
from asr_kd.decoding.stats import Bootstrap, UttCounts, interval, mean_over, paired_test, ratio_of_gains
from asr_kd.fileio import write_json, write_text
from asr_kd.paths import RunPaths

ECE_BINS = 15


class Calibration:
    """Running sums over labelled frames: hits, cross-entropy, entropy, confidence bins."""

    def __init__(self) -> None:
        self.frames = self.hits = 0
        self.nll = self.entropy = 0.0
        self.bin_n = np.zeros(ECE_BINS)
        self.bin_conf = np.zeros(ECE_BINS)
        self.bin_hits = np.zeros(ECE_BINS)

    def add(self, lp: np.ndarray, labels: np.ndarray) -> None:
        p = np.exp(lp.astype(np.float64))
        conf, pred = p.max(axis=1), p.argmax(axis=1)
        hit = pred == labels
        self.frames += len(labels)
        self.hits += int(hit.sum())
        self.nll += float(-lp[np.arange(len(labels)), labels].astype(np.float64).sum())
        self.entropy += float(-(p * np.where(p > 0, np.log(np.maximum(p, 1e-30)), 0.0)).sum())
        b = np.minimum((conf * ECE_BINS).astype(int), ECE_BINS - 1)
        np.add.at(self.bin_n, b, 1)
        np.add.at(self.bin_conf, b, conf)
        np.add.at(self.bin_hits, b, hit)

    def row(self) -> dict[str, float]:
        n = max(self.frames, 1)
        ece = float(np.abs(self.bin_hits - self.bin_conf).sum() / n)
        return {"frame_acc": self.hits / n, "cross_entropy": self.nll / n, "entropy": self.entropy / n,
                "ece": ece, "mean_confidence": float(self.bin_conf.sum() / n), "frames": self.frames}


def mean_posterior_prior(fn, feats: list[np.ndarray], num_pdfs: int) -> np.ndarray:
    """log of the model's mean posterior over the frames of ``feats`` (Kaldi's adjust-priors)."""
    total = np.zeros(num_pdfs)
    frames = 0
    for i in range(0, len(feats), 64):
        for lp in fn(feats[i : i + 64]):
            total += np.exp(lp.astype(np.float64)).sum(axis=0)
            frames += len(lp)
    return log_priors_from_counts(total / frames * 1e6)


def wer_of(refs, hyps) -> float:
    return score(refs, {h.utt: h.words for h in hyps})[0].wer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exp-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--systems", default="", help="comma-separated (default: every teacher, the ensemble, the students)")
    ap.add_argument("--scales", default="0.06,0.08,0.11,0.14")
    ap.add_argument("--dev-utts", type=int, default=200, help="dev utterances that choose the scale (0: all)")
    ap.add_argument("--test-utts", type=int, default=0, help="test utterances (0: all)")
    ap.add_argument("--prior-utts", type=int, default=200, help="training utterances for the mean-posterior prior")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)

    paths = RunPaths(args.exp_dir)
    cfg = apply_overrides(from_dict(json.loads((args.exp_dir / "config.json").read_text())), {"decode.teachers": "all"})
    scales = [float(s) for s in args.scales.split(",")]
    gmm = load_model(paths.align)
    decoder = read_hclg_decoder(paths.graph, gmm.trans_model,
                                SearchConfig.of(cfg.decode))
    count_prior = train_log_priors(paths, gmm.num_pdfs)
    dev, test = subset(read_split(paths, "dev"), args.dev_utts), subset(read_split(paths, "test"), args.test_utts)
    train = read_split(paths, "train", max_utts=args.prior_utts)
    systems = discover_systems(cfg, paths)
    if args.systems:
        want = args.systems.split(",")
        systems = [s for s in systems if s.name in want]
    decoded = {}
    for name in [s.name for s in systems]:
        f = paths.decode_summary(name)
        decoded[name] = json.loads(f.read_text()) if f.exists() else {}

    out: dict = {"exp_dir": str(args.exp_dir), "scales": scales, "dev_utts": len(dev.utts), "test_utts": len(test.utts),
                 "prior_utts": len(train.utts), "beam": cfg.decode.beam, "max_active": cfg.decode.max_active,
                 "systems": {}}
    t_start = time.time()
    utt_counts: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
    with SearchPool({"dnn": decoder.decode_log_likelihoods}, args.jobs) as pool:
        search = Search(pool, "dnn", 64, None)
        for system in systems:
            fn, params, precision = posterior_fn(system, cfg)
            own_prior = mean_posterior_prior(fn, [train.feats[u] for u in train.utts], gmm.num_pdfs)
            cal = Calibration()
            row: dict = {"params": params, "precision": precision}
            for prior_name, prior in (("label_counts", count_prior), ("mean_posterior", own_prior)):
                d = run_split(system.name, search, dev, dnn_chunks(fn, dev, prior), scales)
                scale, dev_wer = best_scale(dev.refs, d.hyps)
                test_scales = scales if prior_name == "label_counts" else [scale]
                if prior_name == "label_counts":
                    def prep(chunk, fn=fn, prior=prior, cal=cal):
                        lls, frames = dnn_chunks(fn, test, prior)(chunk)
                        for u in chunk:  # calibration: the log-posteriors are lls + prior
                            if u in test.labels and u in lls and len(test.labels[u]) == len(lls[u]):
                                cal.add(lls[u] + prior[None, :], test.labels[u])
                        return lls, frames
                    t = run_split(system.name, search, test, prep, test_scales)
                else:
                    t = run_split(system.name, search, test, dnn_chunks(fn, test, prior), test_scales)
                stats, aligned = score(test.refs, {h.utt: h.words for h in t.hyps[scale]})
                utt_counts[system.name, prior_name] = {a.utt: (a.stats.errors, a.stats.ref_words) for a in aligned}
                row[prior_name] = {"dev_wer_by_scale": dev_wer, "scale": scale,
                                   "test_wer_by_scale": {f"{s:g}": (stats.wer if s == scale else wer_of(test.refs, t.hyps[s]))
                                                         for s in test_scales},
                                   "test_wer": stats.wer}
            row["calibration"] = cal.row()
            row["run"] = {k: decoded[system.name].get(k) for k in ("wer", "frame_acc", "dev_frame_acc", "acoustic_scale")}
            row["run"]["dev_wer"] = (decoded[system.name].get("dev") or {}).get("wer")
            out["systems"][system.name] = row
            print(f"{system.name}: counts {row['label_counts']['test_wer']:.4f} @ {row['label_counts']['scale']:g}, "
                  f"own {row['mean_posterior']['test_wer']:.4f} @ {row['mean_posterior']['scale']:g}, "
                  f"ECE {row['calibration']['ece']:.4f}  [{time.time() - t_start:.0f} s]", flush=True)
    out["effects"] = {prior: wer_effects(utt_counts, list(out["systems"]), prior)
                      for prior in ("label_counts", "mean_posterior")}
    out["wall_s"] = round(time.time() - t_start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "wer_study.json", out)
    write_text(args.out / "wer_study.md", render(out))
    print(render(out))
    return 0


def wer_effects(utt_counts: dict, names: list[str], prior: str) -> dict:
    """With each system's dev-chosen scale under ``prior``: paired bootstrap over the test utterances
    (the report's, :mod:`asr_kd.decoding.stats`) of the ensemble's and each student's WER against the
    mean of the teachers studied, and of the share of the ensemble's WER gain each student keeps."""
    teachers = [n for n in names if n.startswith("teacher-")]
    if not teachers or "ensemble" not in names:
        return {}
    utts = sorted(set.intersection(*(set(utt_counts[n, prior]) for n in names)))
    boot = Bootstrap(utts)

    def counts(n: str) -> UttCounts:
        c = utt_counts[n, prior]
        z = np.zeros(len(utts))
        return UttCounts(tuple(utts), np.asarray([c[u][0] for u in utts], float), np.asarray([c[u][1] for u in utts], float),
                         z, z)

    def point(n: str) -> float:
        c = counts(n)
        return float(c.errors.sum() / c.words.sum())

    mt = mean_over([boot.wer(counts(n)) for n in teachers])
    mt_point = statistics.fmean(point(n) for n in teachers)
    ens = boot.wer(counts("ensemble"))
    out = {"teachers": teachers, "test_utts": len(utts), "mean_teacher_wer": mt_point,
           "ensemble_vs_mean_teacher": paired_test(ens, mt, point("ensemble") - mt_point)}
    gain = mt_point - point("ensemble")
    for n in names:
        if n.startswith("distilled_T") or n.startswith("soft_") or n.startswith("baseline_"):
            st = boot.wer(counts(n))
            out[n] = {"vs_mean_teacher": paired_test(st, mt, point(n) - mt_point),
                      "vs_ensemble": paired_test(st, ens, point(n) - point("ensemble")),
                      "wer_gain_kept": (mt_point - point(n)) / gain if gain > 0 else None,
                      "wer_gain_kept_ci": interval(ratio_of_gains(mt - st, mt - ens))}
    return out


def _mean_teacher(rows: dict, get) -> float | None:
    vals = [get(r) for n, r in rows.items() if n.startswith("teacher-")]
    vals = [v for v in vals if v is not None]
    return statistics.fmean(vals) if vals else None


def _ci(ci, scale: float = 100.0, digits: int = 2) -> str:
    return "" if not ci else f"[{scale * ci[0]:+.{digits}f}, {scale * ci[1]:+.{digits}f}]"


def render(out: dict) -> str:
    rows = out["systems"]
    names = list(rows)
    has_teachers = any(n.startswith("teacher-") for n in names)
    order = (["mean teacher"] if has_teachers else []) + [n for n in names if not n.startswith("teacher-")]

    def val(name: str, get):
        return _mean_teacher(rows, get) if name == "mean teacher" else get(rows[name])

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}%"

    lines = [f"Run `{out['exp_dir']}`: dev {out['dev_utts']} utterances choose the scale from {out['scales']}; "
             f"test {out['test_utts']} utterances; beam {out['beam']}, max-active {out['max_active']}; mean-posterior "
             f"priors over {out['prior_utts']} training utterances. The mean teacher averages "
             f"{sum(n.startswith('teacher-') for n in names)} teachers.", "",
             "### Priors", "", "| system | test WER, label-count priors | test WER, own mean-posterior priors | "
             "scale (counts / own) |", "|---|---|---|---|"]
    for n in order:
        lines.append(f"| {n} | {pct(val(n, lambda r: r['label_counts']['test_wer']))} | "
                     f"{pct(val(n, lambda r: r['mean_posterior']['test_wer']))} | "
                     + ("" if n == "mean teacher" else f"{rows[n]['label_counts']['scale']:g} / "
                                                       f"{rows[n]['mean_posterior']['scale']:g}") + " |")
    lines += ["", "### Acoustic scale (label-count priors): test WER at each scale", "",
              "| system | " + " | ".join(f"{s:g}" for s in out["scales"]) + " | dev chose |",
              "|---|" + "---|" * (len(out["scales"]) + 1)]
    for n in order:
        cells = [pct(val(n, lambda r, s=s: r["label_counts"]["test_wer_by_scale"].get(f"{s:g}"))) for s in out["scales"]]
        chose = "" if n == "mean teacher" else f"{rows[n]['label_counts']['scale']:g}"
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {chose} |")
    lines += ["", "### Calibration of the test-frame posteriors", "",
              "| system | frame acc | cross-entropy (nats) | entropy (nats) | mean confidence | ECE |", "|---|---|---|---|---|---|"]
    for n in order:
        c = (lambda k: val(n, lambda r: r["calibration"][k]))
        lines.append(f"| {n} | {pct(c('frame_acc'))} | {c('cross_entropy'):.3f} | {c('entropy'):.3f} | "
                     f"{c('mean_confidence'):.3f} | {c('ece'):.4f} |")
    students = [n for n in names if n.startswith("distilled_T")]
    if students:
        lines += ["", "### Choosing T (the run's own decode)", "",
                  "| student | dev frame acc | dev WER | test frame acc | test WER |", "|---|---|---|---|---|"]
        for n in students:
            r = rows[n]["run"]
            lines.append(f"| {n} | {pct(r.get('dev_frame_acc'))} | {pct(r.get('dev_wer'))} | {pct(r.get('frame_acc'))} | "
                         f"{pct(r.get('wer'))} |")
    for prior, eff in out.get("effects", {}).items():
        if not eff:
            continue
        e = eff["ensemble_vs_mean_teacher"]
        lines += ["", f"### WER effects, {prior.replace('_', '-')} priors (paired bootstrap, {eff['test_utts']} test "
                      f"utterances; mean teacher: {len(eff['teachers'])} teachers, {pct(eff['mean_teacher_wer'])})", "",
                  f"Ensemble - mean teacher: {100 * e['difference']:+.2f} points {_ci(e['ci'])}, p = {e['p_value']:.3f}.", "",
                  "| system | - mean teacher (points) | - ensemble (points) | share of the ensemble's WER gain kept |",
                  "|---|---|---|---|"]
        for n, r in eff.items():
            if isinstance(r, dict) and "vs_mean_teacher" in r:
                a, b = r["vs_mean_teacher"], r["vs_ensemble"]
                kept = "n/a" if r["wer_gain_kept"] is None else f"{100 * r['wer_gain_kept']:.0f}% {_ci(r['wer_gain_kept_ci'], 100, 0)}"
                lines.append(f"| {n} | {100 * a['difference']:+.2f} {_ci(a['ci'])} (p = {a['p_value']:.3f}) | "
                             f"{100 * b['difference']:+.2f} {_ci(b['ci'])} (p = {b['p_value']:.3f}) | {kept} |")
    lines.append(f"\nWall time: {out['wall_s']:.0f} s.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
