"""report.md from the report's rows: both tables beside the paper's, the effects, the test
conditions, the GMM-HMMs, the LM, the corpus and what was lost, wall time per stage. Every table
goes through :func:`md_table`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from asr_kd.decoding.report.rows import (
    ABSENT, Condition, ConditionCell, Derived, ErrorDiff, LmSection, Report, Table1Row, Table5Row, given,
)
from asr_kd.decoding.report.statistics import PAPER_TABLE1, PAPER_TABLE5


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table: the header, its rule, a line per row (cells as ``str`` gives them)."""
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]


def pct(x: float | None) -> str:
    x = given(x)
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _rtf(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _epochs(e: float | None) -> str:
    e = given(e)
    return "" if e is None else f"{e:g}" if isinstance(e, int) or float(e).is_integer() else f"{e:.1f}"


def ci(interval: list[float] | None, scale: float = 100.0, digits: int = 1) -> str:
    """" [low, high]" for an interval (in percent by default), "" when there is none."""
    if not interval or any(math.isnan(v) for v in interval):
        return ""
    return f" [{scale * interval[0]:.{digits}f}, {scale * interval[1]:.{digits}f}]"


def render_markdown(report: Report) -> str:
    """report.md."""
    lines = [f"# asr-kd report ({given(report.preset) or ''} preset)", "",
             "Frame accuracy on the test split (speakers not seen in training); WER on test with the "
             "acoustic scale chosen on dev.", "",
             "## Table 1: distilling the ensemble", ""]
    lines += md_table(("system", "test frame acc", "WER", "params", "epochs", "paper frame acc", "paper WER"),
                      map(_table1_cells, report.table1))
    fraction = 0.03 if report.subset_fraction is ABSENT else report.subset_fraction
    lines += ["", f"## Table 5: soft targets as a regulariser ({100 * fraction:g}% of the training data; paper: 3%)",
              ""]
    lines += md_table(("system", "train frame acc", "test frame acc", "WER", "epochs", "paper train", "paper test"),
                      map(_table5_cells, report.table5))
    lines += ["", "## Derived figures", ""]
    lines += _derived_lines(report.derived)
    lines += _deployment(given(report.deployment))
    conds = given(report.conditions) or []
    if len(conds) > 1:
        lines += _conditions(conds)
    lines += _by_group_table(report.derived)
    lines += error_table(given(report.derived.errors))
    if given(report.gmm_systems):
        lines += ["", "## GMM-HMM systems (the aligner)", "",
                  "Log-likelihood: Viterbi, per frame, of each system's final model against the reference "
                  "transcripts (dev: held-out voices). The DNN labels are the last system's pdfs.", ""]
        lines += md_table(("system", "context", "pdfs", "Gaussians", "train loglike/frame", "dev loglike/frame",
                           "dev WER", "test WER", "acoustic scale"),
                          ([r.system, r.context, r.num_pdfs, r.num_gaussians,
                            *("n/a" if v is None else f"{v:.2f}" for v in (r.train_loglike_per_frame,
                                                                           r.dev_loglike_per_frame)),
                            pct(r.dev_wer), pct(r.wer), f"{r.acoustic_scale:g}"] for r in report.gmm_systems))
    elif given(report.gmm):
        lines.append(f"- GMM-HMM sanity baseline: {pct(report.gmm.wer)} WER.")
    lines += lm_table(given(report.lm))
    lines += ["", "## Corpus and labels", "",
              "Hours, utterances and speakers count what training used (the utterances in the shards); "
              "\"listed by prepare\" is what the corpus reader accepted, before the later losses below.", ""]
    lines += md_table(("split", "hours", "utterances", "speakers", "listed by prepare"),
                      ([split, v.hours, v.utterances, v.speakers,
                        v.utterances if v.listed_by_prepare is ABSENT else v.listed_by_prepare]
                       for split, v in report.corpus.splits.items()))
    lab = report.labels
    lines += ["", f"HMM states: {given(lab.num_pdfs)} ({given(lab.context)}, from {given(lab.source)}).", ""]
    lines += _lost_table(report.corpus.lost)
    lines += ["## Wall time per stage", ""]
    parts = given(report.timing_parts) or {}
    lines += md_table(("stage", "seconds", "of which"),
                      ([k, v, "; ".join(f"{name} {secs} s" for name, secs in parts.get(k, {}).items())]
                       for k, v in report.timing.items()))
    lines += ["", "Plots: `frame_acc_wer_vs_T.png`, `table5_curves.png`.", ""]
    return "\n".join(lines)


def _table1_cells(r: Table1Row) -> list[str]:
    paper_key = "distilled" if r.system.startswith("distilled") else r.system
    paper = PAPER_TABLE1.get(paper_key) or (PAPER_TABLE1["baseline"] if r.system == "baseline_mean" else None)
    acc, wer = pct(r.frame_acc), pct(r.wer)
    if r.system == "baseline_mean":
        acc += f" ± {100 * r.frame_acc_std:.1f}"
        wer += f" ± {100 * r.wer_std:.1f}"
    acc += ci(given(r.frame_acc_ci))
    wer += ci(given(r.wer_ci))
    pa, pw = (f"{paper[0]}%", f"{paper[1]}%") if paper else ("", "")
    return [r.system, acc, wer, f"{r.params:,}", _epochs(r.epochs), pa, pw]


def _table5_cells(r: Table5Row) -> list[str]:
    p = PAPER_TABLE5[r.system]
    return [r.system, pct(r.train_frame_acc), f"{pct(r.test_frame_acc)}{ci(given(r.test_frame_acc_ci))}",
            f"{pct(r.wer)}{ci(given(r.wer_ci))}", _epochs(r.epochs), f"{p[0]}%", f"{p[1]}%"]


def _derived_lines(d: Derived) -> list[str]:
    lines = []
    if given(d.gain_kept) is not None:
        lines.append(f"- The best student on dev ({d.best_student}) keeps {100 * d.gain_kept:.0f}%"
                     f"{ci(given(d.gain_kept_ci), digits=0)} of the ensemble's "
                     f"frame-accuracy gain over the mean teacher (paper: {100 * d.paper['gain_kept']:.0f}%).")
    else:
        lines.append("- Share of the ensemble's gain kept: n/a (the ensemble did not beat the mean teacher, "
                     "or a system is missing).")
    if given(d.gain_kept_same_rule) is not None:
        lines.append(f"- Measured instead from a single hard-target model trained by the students' own rule "
                     f"(Table 5's baseline_100), the best student keeps {100 * d.gain_kept_same_rule:.0f}%"
                     f"{ci(given(d.gain_kept_same_rule_ci), digits=0)} of the ensemble's gain over it.")
    if given(d.gap_recovered) is not None:
        lines.append(f"- Soft targets recover {100 * d.gap_recovered:.0f}%{ci(given(d.gap_recovered_ci), digits=0)} "
                     f"of the test-accuracy gap between "
                     f"3% and 100% of the data (paper: {100 * d.paper['gap_recovered']:.0f}%).")
    else:
        lines.append("- Share of the 3%-vs-100% gap recovered: n/a.")
    if given(d.wer_gain_kept) is not None:
        lines.append(f"- In WER: the ensemble is {100 * d.ensemble_wer_gain:.2f} points better than the mean teacher; "
                     f"the best student keeps {100 * d.wer_gain_kept:.0f}%{ci(given(d.wer_gain_kept_ci), digits=0)} "
                     "of that gain (paper: 100%, 10.9 -> 10.7 for both).")
    elif given(d.ensemble_wer_gain) is not None:
        lines.append(f"- In WER: the ensemble is {100 * d.ensemble_wer_gain:+.2f} points from the mean teacher "
                     "(no gain for a student to keep).")
    if given(d.ensemble_wer_gain_same_rule) is not None:
        if given(d.wer_gain_kept_same_rule) is not None:
            kept = (f"the best student keeps {100 * d.wer_gain_kept_same_rule:.0f}%"
                    f"{ci(given(d.wer_gain_kept_same_rule_ci), digits=0)} of that gain")
        else:
            kept = ("no gain for a student to keep: in WER that single model, trained by the students' rule, "
                    "is as good as the ensemble")
        lines.append(f"- In WER, measured from the hard-target model trained by the students' own rule (Table 5's "
                     f"baseline_100): the ensemble's WER is {-100 * d.ensemble_wer_gain_same_rule:+.2f} points from "
                     f"that model's; {kept}.")
    if given(d.wer_gap_recovered) is not None:
        lines.append(f"- In WER, soft targets recover {100 * d.wer_gap_recovered:.0f}%"
                     f"{ci(given(d.wer_gap_recovered_ci), digits=0)} of the 3%-vs-100% gap "
                     f"({100 * d.table5_wer_gap:.1f} points).")
    for t in (given(d.paired_tests) or {}).values():
        a, b = t.systems
        lines.append(f"- WER {a} - {b}: {100 * t.difference:+.2f} points{ci(t.ci, digits=2)}, "
                     f"paired bootstrap p = {t.p_value:.3f}.")
    if d.bootstrap:
        bs, res = d.bootstrap, given(d.wer_resolution_rel)
        lines.append(f"- Intervals: 95 %, {bs.resamples} bootstrap resamples of the {bs.test_utterances} test "
                     "utterances, paired across systems (test-set noise; the teachers' ± is the spread over seeds)."
                     + (f" On this test set a WER is known to ±{100 * res:.0f}% relative." if res else ""))
    return lines


def _deployment(dep: dict[str, Any] | None) -> list[str]:
    """What each exported system costs at inference (the export stage's summary)."""
    if not dep:
        return []
    onnx = dep.get("onnx") or {}
    exported = (f"TorchScript and ONNX, checked against PyTorch: ONNX within {onnx['max_abs_diff']:.1e} in "
                "log-posterior" if onnx.get("written") else "TorchScript, checked against PyTorch"
                + (f"; no ONNX: {', '.join(onnx['skipped'])}" if onnx.get("skipped") else ""))
    lines = ["", "## Deployment: what each system costs at inference", "",
             f"Exported model directories (`models/<system>/`: {exported}). "
             f"Acoustic model only (the search is the same graph for all), one CPU thread, "
             f"{dep['timing_frames']} test frames: the whole utterance in one call, and streaming-style "
             f"(one 26-frame window a call), with torch (TorchScript)"
             f"{' and with onnxruntime (ONNX)' if onnx.get('written') else ''}. "
             f"Real-time factor: seconds of compute per second of audio.", ""]
    lines += md_table(("system", "params", "MFLOPs/frame", "RTF whole utterance", "RTF streaming, batch 1",
                       "ONNX Runtime RTF: whole", "ONNX Runtime RTF: streaming", "test WER", "test frame acc"),
                      ([r["system"], f"{r['params']:,}", f"{r['mflops_per_frame']:.2f}",
                        f"{r['whole_utterance_rtf']:.4f}", f"{r['streaming_batch1_rtf']:.4f}",
                        _rtf(r.get("onnx_whole_utterance_rtf")), _rtf(r.get("onnx_streaming_batch1_rtf")),
                        pct(r["wer"]), pct(r["frame_acc"])] for r in dep["systems"]))
    by = {r["system"]: r for r in dep["systems"]}
    best = dep.get("best_student")
    if best in by and "ensemble" in by:
        e, b = by["ensemble"], by[best]
        lines += ["", f"The best student on dev ({best}) needs {e['mflops_per_frame'] / b['mflops_per_frame']:.1f}x "
                      f"fewer operations per frame than the ensemble and runs "
                      f"{e['whole_utterance_rtf'] / b['whole_utterance_rtf']:.1f}x faster (whole utterance)."]
    return lines


def _conditions(conds: list[Condition]) -> list[str]:
    lines = ["", "## Test conditions: does the ensemble's advantage survive a shift of domain?", "",
             "`test`: the test split; the others: the extra test sets of data.extra_test_subsets (LibriSpeech: "
             "test-other beside test-clean), every system at the acoustic scale it chose on dev. WER (frame "
             "accuracy) with 95 % bootstrap intervals over each set's utterances; the student is the best on "
             "dev.", ""]

    def cell(r: ConditionCell) -> str:
        return f"{pct(r.wer)}{ci(given(r.wer_ci))} ({pct(r.frame_acc)}{ci(given(r.frame_acc_ci))})"

    def kept(c: Condition) -> str:
        k = given(c.gain_kept)
        return "n/a (no gain)" if k is None else f"{100 * k:.0f}%{ci(given(c.gain_kept_ci), digits=0)}"

    lines += md_table(("condition", "utts", "mean teacher", "ensemble", "best student", "ensemble WER gain",
                       "student keeps (frame acc)"),
                      ([c.condition, given(c.utterances) or "", cell(c.mean_teacher), cell(c.ensemble),
                        f"{c.best_student}: {cell(c.student)}", f"{100 * c.ensemble_wer_gain:+.1f} points", kept(c)]
                       for c in conds))
    return lines + _scale_table(conds)


def _scale_table(conds: list[Condition]) -> list[str]:
    """Each condition's WER at every acoustic scale of the dev grid (the conditions stage's
    ``wer_by_scale``): a shifted domain may want another scale than the one dev chose."""
    rows = [c for c in conds if given(c.mean_teacher.wer_by_scale)]
    if not rows:
        return []
    out = ["", "WER at each acoustic scale of the dev grid (the table above: each system's choice on dev):", ""]
    return out + md_table(("condition", "acoustic scale", "mean teacher", "ensemble", "best student"),
                          ([c.condition, g, *(pct((given(getattr(c, who).wer_by_scale) or {}).get(g))
                                              for who in ("mean_teacher", "ensemble", "student"))]
                           for c in rows for g in sorted(c.mean_teacher.wer_by_scale, key=float)))


def lm_table(lm: LmSection | None) -> list[str]:
    """The decoding LM: vocabulary, OOV rate and perplexity per split (report.json's ``lm``)."""
    if not lm:
        return []
    size = lm.vocabulary_size
    lines = ["", "## Language model and vocabulary", "",
             f"Decoding vocabulary: {size:,} words, the LM's plus the training transcripts' (never dev or test's: "
             f"a word outside it is an error no search avoids, counted as OOV). LM: {lm.source}"
             f"{', order ' + str(lm.order) if lm.order else ''}. Perplexity as SRILM's "
             "(OOVs not scored, `</s>` counted)." if size is not None else "", ""]
    return lines + md_table(("split", "tokens", "OOV tokens", "OOV rate", "perplexity"),
                            ([split, f"{lm.tokens[split]:,}", f"{lm.oov_tokens[split]:,}",
                              f"{100 * lm.oov_rate[split]:.2f}%",
                              "n/a" if lm.perplexity.get(split) is None else f"{lm.perplexity[split]:.1f}"]
                             for split in lm.tokens))


def _by_group_table(d: Derived) -> list[str]:
    """The test WER of each group of voices the corpus defines (derived's ``test_by_<kind>``; the
    synthetic corpus: each voice family's, when its test set mixes them)."""
    if not d.test_by or not d.test_by.rows:
        return []
    kind = d.test_by.kind
    lines = ["", f"## Test WER by {kind}", "",
             f"The usual test set split by the {kind} of each held-out voice: WER with 95 % bootstrap "
             f"intervals over that {kind}'s test utterances; the student is the best on dev "
             f"({given(d.best_student)}).", ""]
    return lines + md_table((kind, "utts", "mean teacher", "ensemble", "best student"),
                            ([r.group, r.utterances,
                              *(f"{pct(r.wer[k]['wer'])}{ci(r.wer[k].get('wer_ci'))}" if k in r.wer else "n/a"
                                for k in ("mean_teacher", "ensemble", "best_student"))] for r in d.test_by.rows))


def error_table(e: ErrorDiff | None) -> list[str]:
    """Where the best student's test errors differ from the ensemble's: by kind, by word, and on
    words the training transcripts held or not (derived's ``errors``)."""
    if not e:
        return []
    a, b = e.systems
    n = max(e.ref_words, 1)
    lines = ["", f"## Where {b}'s errors differ from the ensemble's (test)", "",
             f"{e.utterances} test utterances, {e.ref_words:,} reference words; both hypotheses aligned to the "
             f"same reference. Reference words wrong in both: {e.wrong_in_both:,}; in the ensemble only: "
             f"{e.wrong_only_in[a]:,}; in {b} only: {e.wrong_only_in[b]:,}.", ""]
    lines += md_table(("error", a, b, f"{b} - {a} (points of WER)"),
                      ([k, v[a], v[b], f"{100 * (v[b] - v[a]) / n:+.2f}"] for k, v in e.by_kind.items()))
    if given(e.by_training_words):
        lines += ["", "Error rate of the reference words by whether a training transcript held them:", ""]
        lines += md_table(("words", "count", a, b),
                          ([k, f"{v['words']:,}", pct(v[a] / v["words"] if v["words"] else None),
                            pct(v[b] / v["words"] if v["words"] else None)] for k, v in e.by_training_words.items()))
    if e.words_worse or e.words_better:
        def words(rows: list[list]) -> str:
            return ", ".join(f"{w} ({x}/{y})" for w, x, y in rows) or "none"
        lines += ["", f"Words most often wrong in {b} only (wrong in {b} only / in the ensemble only): "
                      f"{words(e.words_worse)}. In the ensemble only: {words(e.words_better)}."]
    return lines


def _lost_table(account: dict[str, Any]) -> list[str]:
    """report.md's "Utterances lost, by stage and reason" (prepare's rows count input files and lines)."""
    lines = ["## Utterances lost, by stage and reason", ""]
    rows = [(split, r) for split, a in account.items() for r in a.get("rows", [])]
    if not rows:
        return lines + ["None: every utterance of the corpus reached the shards.", ""]
    return lines + md_table(("split", "stage", "reason", "count", "first named"),
                            ([split, r["stage"], r["reason"], r["count"],
                              (r["examples"][0] if r.get("examples") else "").replace("|", "/")]
                             for split, r in rows)) + [""]
