"""The report stage: schema validation (the rows' own checks), the paper's numbers in report.md, plots, the loss account."""

from __future__ import annotations

import json
import zlib
from dataclasses import replace

import numpy as np
import pytest

from asr_kd.config import load_config
from asr_kd.fileio import write_json
from asr_kd.paths import RunPaths, TrainRunDir
from asr_kd.stages import _collect as collect
from asr_kd.decoding.report.render import render_markdown
from asr_kd.decoding.report.rows import Report, ReportError
from asr_kd.stages import report


def _summary(frame_acc: float, wer: float, params: int = 1000) -> dict:
    return {"frame_acc": frame_acc, "wer": wer, "params": params, "acoustic_scale": 0.1}


def _utt_counts(paths: RunPaths, name: str, frame_acc: float, wer: float, n: int = 40) -> None:
    """Per-utterance counts that add up to the summary's figures (10 words, 100 frames each)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    errors = rng.multinomial(round(wer * 10 * n), [1 / n] * n)
    hits = np.clip(rng.multinomial(round(frame_acc * 100 * n), [1 / n] * n), 0, 100)
    hits[0] += round(frame_acc * 100 * n) - hits.sum()
    write_json(paths.decode_utt_counts(name), {"utts": [f"u{i:02d}" for i in range(n)], "errors": errors.tolist(),
                                               "words": [10] * n, "hits": hits.tolist(), "frames": [100] * n})


@pytest.fixture()
def run(tmp_path):
    cfg = load_config("smoke", {"teachers.num_teachers": "3", "distill.temperatures": "1,5"})
    paths = RunPaths(tmp_path / "exp")
    for k, (acc, wer) in enumerate([(0.60, 0.12), (0.62, 0.10), (0.58, 0.14)]):
        write_json(paths.decode_summary(f"teacher-{k}"), _summary(acc, wer))
    write_json(paths.decode_summary("ensemble"), _summary(0.66, 0.08))
    write_json(paths.decode_summary("distilled_T1"), _summary(0.63, 0.09))
    write_json(paths.decode_summary("distilled_T5"), _summary(0.645, 0.085))
    write_json(paths.decode_summary("baseline_3"), _summary(0.45, 0.30))
    write_json(paths.decode_summary("soft_3"), _summary(0.55, 0.20))
    for name in ("teacher-0", "teacher-1", "teacher-2", "ensemble", "distilled_T1", "distilled_T5", "baseline_3",
                 "soft_3"):
        summary = json.loads(paths.decode_summary(name).read_text())
        _utt_counts(paths, name, summary["frame_acc"], summary["wer"])
    for name, context, pdfs, dev_wer, wer in (("gmm", "triphone", 300, 0.22, 0.25), ("gmm_mono", "monophone", 120, 0.3, 0.32)):
        write_json(paths.decode_summary(name), {"wer": wer, "acoustic_scale": 0.08, "dev": {"wer": dev_wer},
                                                "context": context, "num_pdfs": pdfs, "num_gaussians": 4 * pdfs})
    write_json(TrainRunDir(paths.teacher_dir(0)).metrics, {"train_frame_acc": 0.70})
    hist = [{"epoch": e, "train_frame_acc_running": 0.5 + 0.1 * e, "dev_frame_acc": 0.45 + 0.01 * e} for e in range(3)]
    write_json(TrainRunDir(paths.table5_dir("baseline_3")).metrics, {"train_frame_acc": 0.80, "history": hist})
    write_json(TrainRunDir(paths.table5_dir("soft_3")).metrics, {"train_frame_acc": 0.65, "history": hist})
    write_json(paths.marker("prepare"), {"wall_time_s": 3.5, "summary": {
        "splits": {"train": {"hours": 0.1, "utterances": 50, "speakers": 6, "skipped": {}}},
        "skipped_total": 0, "lm_text": ""}})
    split = {"sentences": 5, "tokens": 40, "oov_types": 1, "oov_words": [["ZEBRA", 2]]}
    write_json(paths.marker("graph"), {"wall_time_s": 4.0, "summary": {"lm": {
        "source": "Kneser-Ney from LM text + training transcripts", "order": 3,
        "vocabulary": {"rule": "LM words + training-transcript words (no dev or test words)", "in_graph": 1234},
        "splits": {"dev": {**split, "oov_tokens": 0, "oov_rate": 0.0, "perplexity": 41.5},
                   "test": {**split, "oov_tokens": 2, "oov_rate": 0.05, "perplexity": 57.25}}}}})
    write_json(paths.marker("align"), {"wall_time_s": 20.0, "summary": {
        "num_pdfs": 300, "context": "triphone", "train_loglike_per_frame": -80.5, "dev_loglike_per_frame": -85.25,
        "monophone": {"num_pdfs": 120, "train_loglike_per_frame": -82.0, "dev_loglike_per_frame": -86.0}}})
    return cfg, paths


def test_report_follows_schema_and_numbers(run) -> None:
    cfg, paths = run
    out = report.build_report(cfg, paths).to_json()
    Report.from_json(out)
    rows = {r["system"]: r for r in out["table1"]}
    assert list(rows) == ["baseline", "baseline_mean", "ensemble", "distilled_T1", "distilled_T5"]
    assert rows["baseline"]["frame_acc"] == 0.60
    assert rows["baseline_mean"]["frame_acc"] == pytest.approx(0.60)
    assert rows["baseline_mean"]["wer_std"] == pytest.approx(np.std([0.12, 0.10, 0.14], ddof=1))
    assert rows["ensemble"]["params"] == 3000
    t5 = {r["system"]: r for r in out["table5"]}
    assert t5["baseline_100"]["decoded_as"] == "teacher-0" and t5["baseline_100"]["train_frame_acc"] == 0.70
    assert t5["soft_3"]["test_frame_acc"] == 0.55
    d = out["derived"]
    assert d["best_student"] == "distilled_T5"
    assert d["gain_kept"] == pytest.approx((0.645 - 0.60) / (0.66 - 0.60))
    assert d["gap_recovered"] == pytest.approx((0.55 - 0.45) / (0.60 - 0.45))
    # the same effects in WER: the mean teacher's 12 % WER, the ensemble's 8 %, the best student's 8.5 %;
    # Table 5: 3 % hard 30 %, soft 20 %, 100 % (teacher 0) 12 %
    assert d["ensemble_wer_gain"] == pytest.approx(0.04)
    assert d["wer_gain_kept"] == pytest.approx((0.12 - 0.085) / 0.04)
    assert d["wer_gap_recovered"] == pytest.approx((0.30 - 0.20) / (0.30 - 0.12))
    assert out["timing"] == {"prepare": 3.5, "align": 20.0, "graph": 4.0}
    assert out["lm"] == {"source": "Kneser-Ney from LM text + training transcripts", "order": 3,
                         "vocabulary_size": 1234,
                         "vocabulary_rule": "LM words + training-transcript words (no dev or test words)",
                         "tokens": {"dev": 40, "test": 40}, "oov_tokens": {"dev": 0, "test": 2},
                         "oov_rate": {"dev": 0.0, "test": 0.05}, "perplexity": {"dev": 41.5, "test": 57.25}}
    assert out["labels"]["num_pdfs"] == 300
    gmm = out["gmm_systems"]
    assert [r["system"] for r in gmm] == ["gmm_mono", "gmm"]
    assert gmm[0] == {"system": "gmm_mono", "context": "monophone", "num_pdfs": 120, "num_gaussians": 480,
                           "train_loglike_per_frame": -82.0, "dev_loglike_per_frame": -86.0, "dev_wer": 0.3,
                           "wer": 0.32, "acoustic_scale": 0.08}
    assert gmm[1]["train_loglike_per_frame"] == -80.5 and gmm[1]["wer"] == 0.25


def test_every_row_has_a_wer_interval_and_the_effects_theirs(run) -> None:
    cfg, paths = run
    out = report.build_report(cfg, paths).to_json()
    Report.from_json(out)
    for row in out["table1"] + out["table5"]:
        low, high = row["wer_ci"]
        assert low <= row["wer"] <= high, row
    d = out["derived"]
    for key in ("gain_kept", "gap_recovered", "wer_gain_kept", "wer_gap_recovered"):
        low, high = d[f"{key}_ci"]
        assert low <= d[key] <= high
    tests = d["paired_tests"]
    assert tests["ensemble_vs_mean_teacher"]["systems"] == ["ensemble", "baseline_mean"]
    assert tests["ensemble_vs_mean_teacher"]["difference"] == pytest.approx(0.08 - 0.12)
    assert 0.0 <= tests["ensemble_vs_mean_teacher"]["p_value"] <= 1.0
    assert d["bootstrap"]["test_utterances"] == 40 and d["wer_resolution_rel"] > 0
    md = render_markdown(Report.from_json(out))
    assert "paired bootstrap p =" in md and f"keeps {100 * d['gain_kept']:.0f}% [" in md
    assert f"keeps {100 * d['wer_gain_kept']:.0f}% [" in md and f"recover {100 * d['wer_gap_recovered']:.0f}% [" in md


def test_the_wer_gain_kept_is_null_without_an_ensemble_wer_gain(run) -> None:
    cfg, paths = run
    write_json(paths.decode_summary("ensemble"), _summary(0.66, 0.125))
    d = report.build_report(cfg, paths).to_json()["derived"]
    assert d["ensemble_wer_gain"] == pytest.approx(-0.005) and d["wer_gain_kept"] is None
    assert "no gain for a student to keep" in render_markdown(Report.from_json(report.build_report(cfg, paths).to_json()))


def test_where_the_students_errors_differ_from_the_ensembles(run) -> None:
    """The error table reads the decode stage's own per_utt files: the same reference words, each
    right or wrong in each system, by kind, by word, and by whether training heard the word."""
    from asr_kd.data.manifest import Utterance, write_manifest
    from asr_kd.decoding.scoring import write_scoring

    cfg, paths = run
    refs = {"u1": "THE CAT SAT ON THE MAT".split(), "u2": "A RARE WORD HERE".split()}
    write_scoring(paths.decode_dir("ensemble", "test"), refs,
                  {"u1": "THE CAT SAT ON THE MAT".split(), "u2": "A RAIR WORD HERE".split()})
    write_scoring(paths.decode_dir("distilled_T5", "test"), refs,
                  {"u1": "THE CAT SAT ON ON MAT".split(), "u2": "A WORD HERE NOW".split()})
    write_manifest(paths.manifest("train"), [Utterance("t1", "s", "c", "a.wav", "THE CAT SAT ON A MAT HERE WORD",
                                                       16000, 16000)])
    out = report.build_report(cfg, paths).to_json()
    Report.from_json(out)
    e = out["derived"]["errors"]
    assert e["systems"] == ["ensemble", "distilled_T5"] and e["utterances"] == 2 and e["ref_words"] == 10
    assert e["by_kind"] == {"substitution": {"ensemble": 1, "distilled_T5": 1},
                            "deletion": {"ensemble": 0, "distilled_T5": 1},
                            "insertion": {"ensemble": 0, "distilled_T5": 1}}
    assert e["wrong_in_both"] == 1 and e["wrong_only_in"] == {"ensemble": 0, "distilled_T5": 1}
    assert e["words_worse"] == [["THE", 1, 0]] and e["words_better"] == []
    assert e["by_training_words"] == {"heard in training": {"words": 9, "ensemble": 0, "distilled_T5": 1},
                                      "never in training": {"words": 1, "ensemble": 1, "distilled_T5": 1}}
    md = render_markdown(Report.from_json(out))
    assert "## Where distilled_T5's errors differ from the ensemble's (test)" in md
    assert "| deletion | 0 | 1 | +10.00 |" in md and "THE (1/0)" in md


def test_best_student_is_chosen_on_dev_not_test(run) -> None:
    cfg, paths = run
    for name, dev in (("distilled_T1", 0.70), ("distilled_T5", 0.65)):
        summary = json.loads(paths.decode_summary(name).read_text())
        write_json(paths.decode_summary(name), {**summary, "dev_frame_acc": dev})
    d = report.build_report(cfg, paths).to_json()["derived"]
    assert d["best_student"] == "distilled_T1"  # although T5 is better on test
    assert d["gain_kept"] == pytest.approx((0.63 - 0.60) / (0.66 - 0.60))


def test_gain_is_also_measured_from_a_same_rule_hard_model(run) -> None:
    """With baseline_100=train the students' share is also given against that model, with its interval."""
    cfg, paths = run
    assert "gain_kept_same_rule" not in report.build_report(cfg, paths).to_json()["derived"]  # baseline_100 = teacher 0
    write_json(paths.decode_summary("baseline_100"), _summary(0.62, 0.11))
    _utt_counts(paths, "baseline_100", 0.62, 0.11)
    write_json(TrainRunDir(paths.table5_dir("baseline_100")).metrics, {"train_frame_acc": 0.75})
    TrainRunDir(paths.table5_dir("baseline_100")).model.write_bytes(b"x")
    # the model and results of an earlier run with baseline_100=train: this run's config (teacher 0) decides
    stale = report.build_report(cfg, paths).to_json()
    assert "gain_kept_same_rule" not in stale["derived"]
    assert stale["table5"][0]["decoded_as"] == "teacher-0"
    cfg = replace(cfg, distill=replace(cfg.distill, baseline_100="train"))
    out = report.build_report(cfg, paths).to_json()
    d = out["derived"]
    assert d["gain_kept_same_rule"] == pytest.approx((0.645 - 0.62) / (0.66 - 0.62))
    low, high = d["gain_kept_same_rule_ci"]
    assert low <= d["gain_kept_same_rule"] <= high
    assert "trained by the students' own rule" in render_markdown(Report.from_json(out))


def test_report_files_markdown_and_plots(run) -> None:
    cfg, paths = run
    summary = report.run(cfg, paths)
    assert summary["table1_rows"] == 5
    obj = json.loads(paths.report_json.read_text())
    Report.from_json(obj)
    md = paths.report_md.read_text()
    for number in ("58.9%", "61.1%", "60.8%", "10.9%", "10.7%", "63.4%", "44.5%", "57.0%", "67.3%", "65.4%"):
        assert number in md
    assert "| ensemble | 66.0% [" in md
    assert "| gmm_mono | monophone | 120 | 480 | -82.00 | -86.00 | 30.0% | 32.0% | 0.08 |" in md
    assert "| gmm | triphone | 300 | 1200 | -80.50 | -85.25 | 22.0% | 25.0% | 0.08 |" in md
    assert "Decoding vocabulary: 1,234 words" in md
    assert "| dev | 40 | 0 | 0.00% | 41.5 |" in md and "| test | 40 | 2 | 5.00% | 57.2 |" in md
    for png in (paths.plot_vs_temperature, paths.plot_table5_curves):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("breakage, message", [
    (lambda r: r.pop("timing"), "timing"),
    (lambda r: r["table1"][0].pop("wer"), "wer"),
    (lambda r: r["table1"][0].update(frame_acc=58.9), "fractions"),
    (lambda r: r["table1"][1].pop("wer_std"), "wer_std"),
    (lambda r: r["table1"].append({"system": "mystery", "frame_acc": 0.5, "wer": 0.1, "params": 1}), "mystery"),
    (lambda r: r["table5"][0].update(system="baseline_50"), "baseline_50"),
    (lambda r: r["gmm_systems"][0].pop("train_loglike_per_frame"), "train_loglike_per_frame"),
    (lambda r: r["gmm_systems"][1].update(num_pdfs="300"), "num_pdfs"),
    (lambda r: r["lm"]["oov_rate"].update(test=5.0), "lm.oov_rate.test"),
    (lambda r: r["lm"].pop("perplexity"), "lm.perplexity"),
    (lambda r: r["lm"]["perplexity"].update(dev=0.5), "lm.perplexity.dev"),
    (lambda r: r["lm"]["tokens"].update(dev="40"), "lm.tokens.dev"),
])
def test_validate_report_rejects_broken_reports(run, breakage, message) -> None:
    cfg, paths = run
    out = report.build_report(cfg, paths).to_json()
    breakage(out)
    with pytest.raises(ReportError, match=message):
        Report.from_json(out)


def _lost(reason: str, names: list[str]) -> dict:
    return {"counts": {reason: len(names)}, "examples": {reason: names}}


def _account_markers(paths: RunPaths, shard_utts: int) -> None:
    """A train split of 10 listed utterances: features lost 1, align 2, shards 1; ``shard_utts`` reached the shards."""
    from asr_kd.data.manifest import Utterance, write_manifest

    utts = [Utterance(f"1-1-{i:04d}", str(1 + i % 2), "1", f"/c/1-1-{i:04d}.flac", "HI", 16000 * (i + 1), 16000)
            for i in range(10)]
    write_manifest(paths.manifest("train"), utts)
    write_json(paths.marker("prepare"), {"summary": {"splits": {"train": {
        "hours": 0.1, "utterances": 10, "speakers": 2,
        "skipped": _lost("silent_audio", ["/c/1-1-0099.flac"])}}, "skipped_total": 1}})
    write_json(paths.marker("features"), {"summary": {"splits": {"train": {
        "lost": _lost("unreadable_audio", ["/c/1-1-0009.flac: cannot read audio"])}}}})
    write_json(paths.marker("align"), {"summary": {"splits": {"train": {
        "lost": _lost("too_few_frames", ["1-1-0007: equal alignment failed", "1-1-0008: equal alignment failed"])}}}})
    write_json(paths.marker("shards"), {"summary": {"splits": {"train": {
        "utterances": shard_utts, "lost": _lost("length_mismatch", ["1-1-0006 (labels 9, frames 10)"])}}}})
    write_json(paths.shard_index("train"), {"shards": [{"file": "shard-000000.tar",
                                                        "utts": [[u.id, 100] for u in utts[:shard_utts]]}]})


def test_report_counts_what_training_used_and_every_loss(tmp_path) -> None:
    """Issue 17: utterance counts are the shards' (not prepare's list), and one account per split
    names every loss by stage and reason."""
    paths = RunPaths(tmp_path / "exp")
    _account_markers(paths, shard_utts=6)
    corpus = collect.corpus_section(paths).to_json()
    train = corpus["splits"]["train"]
    assert train["utterances"] == 6 and train["listed_by_prepare"] == 10 and train["counted_from"] == "shards"
    assert train["speakers"] == 2 and train["hours"] == round(sum(range(1, 7)) / 3600, 4)
    account = corpus["lost"]["train"]
    assert [(r["stage"], r["reason"], r["count"]) for r in account["rows"]] == [
        ("prepare", "silent_audio", 1), ("features", "unreadable_audio", 1), ("align", "too_few_frames", 2),
        ("shards", "length_mismatch", 1)]
    assert account["unaccounted"] == 0 and corpus["lost_total"] == 5
    md = render_markdown(Report.from_json({"table1": [], "table5": [], "corpus": corpus, "labels": {}, "timing": {}}))
    assert "## Utterances lost, by stage and reason" in md
    assert "| train | align | too_few_frames | 2 | 1-1-0007: equal alignment failed |" in md
    assert "| train | 0.0058 | 6 | 2 | 10 |" in md


def test_an_utterance_dropped_silently_shows_as_unaccounted(tmp_path) -> None:
    paths = RunPaths(tmp_path / "exp")
    _account_markers(paths, shard_utts=5)
    account = collect.corpus_section(paths).lost["train"]
    assert account["unaccounted"] == 1
    assert account["rows"][-1]["reason"] == "unaccounted" and account["rows"][-1]["count"] == 1


def _synthetic_test_split(paths: RunPaths, corpus, synth_of_speaker: dict[str, str]) -> None:
    """A synthetic corpus's SPEAKERS.TXT, the test manifest (u00-u19: speaker 131, u20-u39: 132)
    and prepare's corpus_root, as the prepare stage leaves them."""
    from data_prep.synthetic import SPEAKERS_NAME

    corpus.mkdir()
    program = {"espeak": "espeak-ng en-gb+m1 s160 p50", "flite": "flite kal16 stretch1.00 f0own shift+0"}
    (corpus / SPEAKERS_NAME).write_text("".join(f"{s}  | M | test-synth  |  1.00 | {program[v]}\n"
                                                for s, v in synth_of_speaker.items()))
    paths.manifest("test").parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"u{i:02d}", "speaker": "131" if i < 20 else "132", "chapter": "1", "audio": f"/a/u{i:02d}.flac",
             "text": "A", "num_samples": 16000, "sample_rate": 16000} for i in range(40)]
    paths.manifest("test").write_text("".join(json.dumps(r) + "\n" for r in rows))
    marker = json.loads(paths.marker("prepare").read_text())
    marker["summary"]["corpus_root"] = str(corpus)
    write_json(paths.marker("prepare"), marker)


def _wer_on(paths: RunPaths, name: str, utts: set[str]) -> float:
    c = json.loads(paths.decode_utt_counts(name).read_text())
    keep = [i for i, u in enumerate(c["utts"]) if u in utts]
    return sum(c["errors"][i] for i in keep) / sum(c["words"][i] for i in keep)


def test_test_wer_by_synthesizer_of_a_synthetic_corpus(run, tmp_path) -> None:
    cfg, paths = run
    _synthetic_test_split(paths, tmp_path / "corpus", {"131": "espeak", "132": "flite"})
    report.run(cfg, paths)
    rows = json.loads(paths.report_json.read_text())["derived"]["test_by_synthesizer"]
    assert [(r["synthesizer"], r["utterances"]) for r in rows] == [("espeak", 20), ("flite", 20)]
    espeak = {f"u{i:02d}" for i in range(20)}
    mean_teacher = np.mean([_wer_on(paths, f"teacher-{k}", espeak) for k in range(3)])
    assert rows[0]["mean_teacher"]["wer"] == pytest.approx(mean_teacher)
    assert rows[0]["ensemble"]["wer"] == pytest.approx(_wer_on(paths, "ensemble", espeak))
    assert rows[0]["best_student"]["wer"] == pytest.approx(_wer_on(paths, "distilled_T5", espeak))
    low, high = rows[1]["ensemble"]["wer_ci"]
    assert low <= rows[1]["ensemble"]["wer"] <= high
    md = paths.report_md.read_text()
    assert "## Test WER by synthesizer" in md
    assert f"| espeak | 20 | {100 * mean_teacher:.1f}% [" in md


def test_no_synthesizer_table_for_one_synthesizer_or_another_corpus(run, tmp_path) -> None:
    cfg, paths = run
    assert "test_by_synthesizer" not in report.build_report(cfg, paths).to_json()["derived"]  # no corpus_root
    _synthetic_test_split(paths, tmp_path / "corpus", {"131": "espeak", "132": "espeak"})
    assert "test_by_synthesizer" not in report.build_report(cfg, paths).to_json()["derived"]
    report.run(cfg, paths)
    assert "Test WER by synthesizer" not in paths.report_md.read_text()


def test_the_wall_time_table_names_the_work_inside_a_stage(run) -> None:
    cfg, paths = run
    report.run(cfg, paths)
    assert "retune" not in json.loads(paths.report_json.read_text())
    prepare = json.loads(paths.marker("prepare").read_text())
    prepare["summary"].update(synthetic_corpus_s=98.3, augment={"augment_s": 26.9})
    write_json(paths.marker("prepare"), prepare)
    report.run(cfg, paths)
    md = paths.report_md.read_text()
    assert "| prepare | 3.5 | synthetic corpus generation 98.3 s; augmented copies 26.9 s |" in md
    assert "| align | 20.0 |  |" in md


def test_report_json_is_the_rows_and_reads_back_to_them(run) -> None:
    """report.json is the rows' to_json; from_json (the schema check) reads it back to the same rows."""
    cfg, paths = run
    rows = report.build_report(cfg, paths)
    obj = rows.to_json()
    assert Report.from_json(obj) == rows and Report.from_json(obj).to_json() == obj
    assert "frame_acc_ci" in obj["table1"][0] and "frame_acc_std" not in obj["table1"][0]  # absent keys stay out
    with pytest.raises(ReportError, match="unknown key 'wer_cl'"):
        Report.from_json({**obj, "table1": [{**obj["table1"][0], "wer_cl": [0.1, 0.2]}]})


def test_the_bootstrap_returns_new_rows_and_leaves_its_arguments_alone(run) -> None:
    from asr_kd.decoding.report import statistics

    cfg, paths = run
    table1, table5 = collect.table1_rows(cfg, paths), collect.table5_rows(cfg, paths)
    derived = statistics.effects(table1, table5)
    before = [r.to_json() for r in table1 + table5] + [derived.to_json()]
    counts = collect.utt_counts(paths, statistics.decoded_systems(table1, table5))
    new1, new5, new_derived = statistics.with_intervals(table1, table5, derived, counts)
    assert [r.to_json() for r in table1 + table5] + [derived.to_json()] == before
    assert all(r.wer_ci for r in new1 + new5) and new_derived.gain_kept_ci and new_derived.paired_tests


def test_table5_curves_are_plotted_against_epochs_of_the_subset_run() -> None:
    """The history counts Lightning passes over the subset (a dev check every ``passes_per_epoch``):
    the plot's x axis is epochs, 1, 2, 3, not passes 33, 66, 99."""
    from asr_kd.decoding.report.plots import curve_points

    hist = [{"epoch": 33 * k + 32, "train_frame_acc_running": 0.5, "dev_frame_acc": 0.4} for k in range(3)]
    epochs, train, held, heldname = curve_points(hist, passes_per_epoch=33)
    assert epochs == [1.0, 2.0, 3.0] and train == [50.0] * 3 and held == [40.0] * 3 and heldname == "dev"
    assert curve_points(hist[:1])[0] == [33]  # one pass an epoch: as the history counts


def test_the_wer_effect_is_also_measured_from_a_same_rule_hard_model(run) -> None:
    """With baseline_100=train the WER effect is also given against that model (the ensemble's gain over
    it, the share the best student keeps, paired tests); where that model is as good as the ensemble,
    the report says there is no gain to keep."""
    cfg, paths = run
    d = report.build_report(cfg, paths).to_json()["derived"]
    assert "wer_gain_kept_same_rule" not in d and "best_student_vs_same_rule_baseline" not in d["paired_tests"]
    write_json(TrainRunDir(paths.table5_dir("baseline_100")).metrics, {"train_frame_acc": 0.75})
    TrainRunDir(paths.table5_dir("baseline_100")).model.write_bytes(b"x")
    cfg = replace(cfg, distill=replace(cfg.distill, baseline_100="train"))
    for wer, kept in ((0.10, (0.10 - 0.085) / (0.10 - 0.08)), (0.075, None)):
        write_json(paths.decode_summary("baseline_100"), _summary(0.62, wer))
        _utt_counts(paths, "baseline_100", 0.62, wer)
        out = report.build_report(cfg, paths).to_json()
        d = out["derived"]
        assert d["ensemble_wer_gain_same_rule"] == pytest.approx(wer - 0.08)
        test = d["paired_tests"]["best_student_vs_same_rule_baseline"]
        assert test["systems"] == ["distilled_T5", "baseline_100"] and test["difference"] == pytest.approx(0.085 - wer)
        assert d["paired_tests"]["ensemble_vs_same_rule_baseline"]["difference"] == pytest.approx(0.08 - wer)
        md = render_markdown(Report.from_json(out))
        if kept is None:
            assert d["wer_gain_kept_same_rule"] is None and "no gain for a student to keep" in md
        else:
            assert d["wer_gain_kept_same_rule"] == pytest.approx(kept)
            low, high = d["wer_gain_kept_same_rule_ci"]
            assert low <= kept <= high
            assert f"keeps {100 * kept:.0f}%" in md
