"""Decoding the systems of a run: decode_dnn on a tiny graph with a fake acoustic model, the search
pool (the scale applied in the worker), the receipts a killed decode resumes from, the dev subset
that chooses the scale, which GMM systems are decoded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.graph_fixture import LEXICON, LM_TEXT, make_tiny_lang, posteriorgram

from asr_kd.config import load_config
from asr_kd.decoding import graph, lm
from asr_kd.decoding import search as decode
from asr_kd.decoding.pool import SearchPool
from asr_kd.decoding.receipts import SplitReceipts, Tally, utt_digests
from asr_kd.fileio import write_json
from asr_kd.paths import TABLE5_RUNS, RunPaths, TrainRunDir
from asr_kd.stages import _decode as systems


@pytest.fixture
def tiny_graph(tmp_path):
    """(lang, decoder) of the tiny YES/NO/MAYBE lexicon with a trigram LM."""
    lang = make_tiny_lang(tmp_path / "lang")
    (tmp_path / "text.txt").write_text("\n".join(LM_TEXT) + "\n")
    lm.build_arpa(tmp_path / "text.txt", tmp_path / "lm.arpa", order=3, vocab=set(LEXICON))
    inputs = graph.GraphInputs(lang.l_disambig, lang.disambig_phones, lang.words_txt, lang.trans_model, lang.tree)
    graph.make_graph(inputs, tmp_path / "lm.arpa", tmp_path / "graph", [lang.words_txt])
    dec = decode.read_hclg_decoder(tmp_path / "graph", lang.trans_model, decode.SearchConfig())
    return lang, dec


def test_decode_dnn_with_a_callable_posterior_source(tmp_path, tiny_graph) -> None:
    """The decode flow (tuning on dev, test WER, frame accuracy, files) with a fake acoustic model."""
    lang, dec = tiny_graph
    sentences = [["NO", "YES"], ["MAYBE", "YES"], ["NO", "MAYBE", "YES"]]

    def split(name: str) -> systems.EvalSplit:
        utts = [f"{name}-{i}" for i in range(len(sentences))]
        lps = {u: posteriorgram(lang, s, seed=i) for i, (u, s) in enumerate(zip(utts, sentences))}
        labels = {u: lp.argmax(axis=1) for u, lp in lps.items()}
        labels[utts[0]] = (labels[utts[0]] + 1) % lang.trans_model.num_pdfs  # one utterance all wrong
        # the "features" are the log-posteriors themselves; the posterior source is the identity
        return systems.EvalSplit(name, utts, lps, labels, dict(zip(utts, sentences)))

    paths = RunPaths(tmp_path / "exp")
    prior = decode.log_priors_from_counts(np.ones(lang.trans_model.num_pdfs))
    identity = systems.per_utterance(lambda feats: feats)
    search = systems.Search(SearchPool({"dnn": dec.decode_log_likelihoods}, 1), "dnn", chunk_utts=2)
    out = systems.decode_dnn("fake", identity, paths, search, prior, split("dev"), split("test"),
                             scales=(0.5, 1.0), params=42)
    assert out["wer"] == 0.0 and out["dev"]["wer"] == 0.0
    n0 = len(posteriorgram(lang, sentences[0]))
    total = sum(len(posteriorgram(lang, s)) for s in sentences)
    assert out["frame_acc"] == pytest.approx((total - n0) / total)
    assert set(out["dev_wer_by_scale"]) == {"0.5", "1"}
    assert (paths.decode_dir("fake", "test") / "per_utt").exists()
    assert json.loads(paths.decode_summary("fake").read_text())["params"] == 42
    assert out["acoustic_scale_from"] == "dev"

    # a scale taken from another system: no dev search (no dev scoring), test decoded at that scale
    shared = systems.decode_dnn("fake2", identity, paths, search, prior, split("dev"), split("test"),
                                scales=(0.5, 1.0), scale_from=("fake", 1.0))
    assert shared["acoustic_scale"] == 1.0 and shared["acoustic_scale_from"] == "fake"
    assert shared["dev_wer_by_scale"] == {} and shared["dev"] == {}
    assert shared["wer"] == 0.0 and shared["frame_acc"] == out["frame_acc"]
    assert shared["dev_frame_acc"] == out["dev_frame_acc"]
    assert not paths.decode_dir("fake2", "dev").exists() and (paths.decode_dir("fake2", "test") / "per_utt").exists()


def test_teachers_share_teacher_zeros_scale_only_when_asked() -> None:
    done = {"teacher-0": {"acoustic_scale": 0.11}}
    first = load_config(overrides={"decode.teacher_scale": "first"})
    each = load_config(overrides={"decode.teacher_scale": "each"})
    sys = lambda name: systems.DnnSystem(name, (), None)  # noqa: E731
    assert systems.shared_scale(first, sys("teacher-3"), done) == ("teacher-0", 0.11)
    assert systems.shared_scale(first, sys("teacher-0"), {}) is None  # teacher 0 chooses its own
    assert systems.shared_scale(first, sys("ensemble"), done) is None
    assert systems.shared_scale(each, sys("teacher-3"), done) is None


def test_students_share_the_best_students_scale_only_when_asked(tmp_path) -> None:
    """decode.student_scale=best: the student best on dev frame accuracy chooses its scale on dev and
    is decoded before the others, which take it; ``each`` (the default) leaves every student its own."""
    from asr_kd.fileio import write_json

    def student(T, acc):
        write_json(tmp_path / f"T{T}.json", {"dev_frame_acc": acc})
        return systems.DnnSystem(f"distilled_T{T}", (), tmp_path / f"T{T}.json")

    students = [student(1, 0.60), student(2, 0.62), student(5, 0.61)]
    assert systems.best_student([systems.DnnSystem("ensemble", (), None), *students]) == "distilled_T2"
    best = load_config(overrides={"decode.student_scale": "best"})
    each = load_config(overrides={"decode.student_scale": "each"})
    done = {"distilled_T2": {"acoustic_scale": 0.09}}
    assert systems.shared_scale(best, students[0], done, "distilled_T2") == ("distilled_T2", 0.09)
    assert systems.shared_scale(best, students[1], {}, "distilled_T2") is None  # the best chooses its own
    assert systems.shared_scale(best, systems.DnnSystem("soft_3", (), None), done, "distilled_T2") is None
    assert systems.shared_scale(each, students[0], done, "distilled_T2") is None
    assert load_config("smoke").decode.student_scale == "each"


def _old_scores(log_post, log_prior, tid_pdf, scale):
    """The decode stage's scores before the scale moved into the search processes (a copy per scale)."""
    ratio = log_post - log_prior[None, :]
    return np.ascontiguousarray(scale * ratio[:, tid_pdf], dtype=np.float32)


def _utterances(lang, n=40):
    sents = [["YES"], ["MAYBE", "YES"], ["NO", "MAYBE"], ["NO", "YES"]] * (n // 4)
    lps = {f"u{i:02d}": posteriorgram(lang, s, peak=0.6, seed=i) for i, s in enumerate(sents)}
    return systems.EvalSplit("dev", list(lps), lps, {u: lp.argmax(axis=1) for u, lp in lps.items()},
                             {f"u{i:02d}": s for i, s in enumerate(sents)})


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_scale_applied_in_the_search_gives_the_old_hypotheses(tiny_graph, jobs) -> None:
    """The pool's workers get each utterance's unscaled log-likelihoods once and scale them
    themselves: the same score matrices (to the bit) and hypotheses as the old per-scale copies,
    at every scale, in one process or two, in chunks or not."""
    lang, dec = tiny_graph
    prior = decode.log_priors_from_counts(np.arange(1, lang.trans_model.num_pdfs + 1, dtype=np.float64))
    data, scales = _utterances(lang), (0.05, 0.3, 1.0)
    for lp in list(data.feats.values())[:4]:
        ll = decode.hybrid_log_likelihoods(lp, prior)
        for s in scales:
            assert np.array_equal(decode.scaled_scores(ll, dec.tid_pdf, s), _old_scores(lp, prior, dec.tid_pdf, s))
            assert np.array_equal(decode.hybrid_scores(lp, prior, dec.tid_pdf, s), _old_scores(lp, prior, dec.tid_pdf, s))
    old = {s: [dec.decode(u, _old_scores(data.feats[u], prior, dec.tid_pdf, s)) for u in data.utts] for s in scales}
    assert {s: len({tuple(h.words) for h in hs}) > 1 for s, hs in old.items()} == dict.fromkeys(scales, True)
    with SearchPool({"dnn": dec.decode_log_likelihoods}, jobs) as pool:
        assert pool.jobs == jobs
        res = systems.run_split("fake", systems.Search(pool, "dnn", chunk_utts=7), data,
                                systems.dnn_chunks(systems.per_utterance(lambda f: f), data, prior), scales)
    for s in scales:
        assert [h.utt for h in res.hyps[s]] == data.utts
        assert [(h.words, h.ok) for h in res.hyps[s]] == [(h.words, h.ok) for h in old[s]], s
    assert res.frames == sum(len(lp) for lp in data.feats.values()) and res.hits == res.frames
    assert systems.best_scale(data.refs, res.hyps) == systems.best_scale(data.refs, old)


def test_a_killed_split_resumes_from_its_chunk_receipts(tmp_path, tiny_graph) -> None:
    """Each finished chunk leaves a receipt; a re-run reuses those of the same key (model, graph,
    scales, data) and searches the rest, to the same result; the finished split's receipt replaces
    the chunks'; another key (a retrained model, other scales) is searched again."""
    lang, dec = tiny_graph
    prior = decode.log_priors_from_counts(np.ones(lang.trans_model.num_pdfs))
    data, scales = _utterances(lang, 20), (0.5, 1.0)
    digests = utt_digests(data.utts, data.feats, data.labels)
    calls = []

    def forward(feats):
        calls.append(len(feats))
        return [f for f in feats]

    def run(identity, tally, grid=scales):
        receipts = lambda d, g: SplitReceipts(tmp_path, "fake", d.split, {**identity, "scales": list(g)},  # noqa: E731
                                              digests, 6, tally)
        with SearchPool({"dnn": dec.decode_log_likelihoods}, 1) as pool:
            search = systems.Search(pool, "dnn", 6, receipts)
            return systems.run_split("fake", search, data, systems.dnn_chunks(forward, data, prior), grid)

    first = run({"model": "a"}, Tally())
    assert calls == [6, 6, 6, 2]
    split_receipt = tmp_path / "fake" / "receipts" / "dev.json"
    assert split_receipt.exists() and not (tmp_path / "fake" / "receipts" / "dev").exists()

    # a kill after two chunks: their receipts are on disk, the split's is not
    rec = SplitReceipts(tmp_path, "fake", "dev", {"model": "a", "scales": list(scales)}, digests, 6)
    split_receipt.unlink()
    from asr_kd.decoding.receipts import SearchRecord
    for i in range(2):
        utts = data.utts[6 * i : 6 * i + 6]
        part = SearchRecord({s: [h for h in first.hyps[s] if h.utt in utts] for s in scales},
                            {u: first.utt_frames[u] for u in utts}, 0.0)
        rec.write_chunk(i, part)
    calls.clear()
    tally = Tally()
    again = run({"model": "a"}, tally)
    assert calls == [6, 2], "only the unfinished chunks are computed"
    assert tally.chunks_reused == {"fake/dev": 2} and tally.chunks_searched == 2 and not tally.splits_reused
    assert tally.line() == ("decode: reused 0 finished (system, split) results and 2 chunks (2 of fake/dev); "
                            "searched 2 chunks")
    for s in scales:
        assert [(h.utt, h.words, h.ok) for h in again.hyps[s]] == [(h.utt, h.words, h.ok) for h in first.hyps[s]]
    assert (again.hits, again.frames, again.utt_frames) == (first.hits, first.frames, first.utt_frames)

    calls.clear()
    tally = Tally()
    run({"model": "a"}, tally)
    assert calls == [] and tally.splits_reused == ["fake/dev"], "a finished split is reused whole"
    calls.clear()
    run({"model": "b"}, Tally())
    assert calls == [6, 6, 6, 2], "another model's receipts are not reused"
    calls.clear()
    run({"model": "b"}, Tally(), grid=(0.5,))
    assert calls == [6, 6, 6, 2], "nor those of other scales"


def test_an_unreadable_receipt_is_an_error_naming_the_file(tmp_path) -> None:
    from asr_kd.errors import InputError

    rec = SplitReceipts(tmp_path, "sys", "dev", {"scales": [0.1]}, ["d1"], 4)
    rec.file.parent.mkdir(parents=True)
    rec.file.write_text("{not json")
    with pytest.raises(InputError, match=r"sys/receipts/dev.json: unreadable decode receipt"):
        rec.finished()


def test_the_tuning_subset_is_a_fixed_draw() -> None:
    """decode.tune_draw=seeded: the same utterances every time, whatever the order they come in,
    spread over the speakers of a speaker-sorted dev set, kept in shard order; first: the first ones."""
    utts = [f"spk{s:02d}-{i:03d}" for s in range(40) for i in range(60)]
    data = systems.EvalSplit("dev", utts, dict.fromkeys(utts), {}, {u: ["W"] for u in utts})
    a = systems.tune_subset(data, 300, "seeded")
    rng = np.random.default_rng(1)
    shuffled = list(rng.permutation(utts))
    b = systems.tune_subset(systems.EvalSplit("dev", shuffled, data.feats, {}, data.refs), 300, "seeded")
    assert len(a.utts) == 300 and set(a.utts) == set(b.utts)
    assert a.utts == [u for u in utts if u in set(a.utts)] and b.utts == [u for u in shuffled if u in set(b.utts)]
    assert len({u.split("-")[0] for u in a.utts}) >= 35  # the first 300 would be 5 speakers
    assert systems.tune_subset(data, 300, "first").utts == utts[:300]
    assert systems.tune_subset(data, 0, "seeded") is data and systems.tune_subset(data, 5000, "seeded") is data
    assert set(a.refs) == set(a.utts)


def test_the_forward_precision_is_the_device_s_own() -> None:
    """A preset's bf16-mixed runs in fp32 on a CPU without fast bf16 (and stays bf16 where it is fast)."""
    from asr_kd.nn import precision

    assert precision.inference_precision("32-true", "cpu") == "32-true"
    fast = precision.cpu_has_fast_bf16()
    assert precision.inference_precision("bf16-mixed", "cpu") == ("bf16-mixed" if fast else "32-true")
    assert precision.inference_precision("auto", "cpu") == ("bf16-mixed" if fast else "32-true")


def test_batched_posteriors_equal_one_utterance_at_a_time() -> None:
    import torch

    from asr_kd.nn.ensemble import batch_log_posteriors, utterance_log_posteriors
    from asr_kd.nn.models import AcousticDNN

    model = AcousticDNN(hidden_layers=2, hidden_dim=64, num_pdfs=30)
    feats = [torch.randn(n, 40) for n in (7, 50, 1, 33)]
    for precision in ("32-true", "auto"):
        one = [utterance_log_posteriors(model, f, 20, 5, precision=precision) for f in feats]
        got = batch_log_posteriors(model, feats, 20, 5, batch_frames=16, precision=precision)
        assert [g.shape for g in got] == [o.shape for o in one]
        assert all(torch.allclose(g, o, atol=1e-5) for g, o in zip(got, one))


def test_gmm_systems_decode_the_monophone_only_when_asked_and_present(tmp_path) -> None:
    cfg, paths = load_config("smoke", {}), RunPaths(tmp_path / "exp")
    write_json(paths.marker("align"), {"summary": {"context": "triphone"}})
    assert [g.name for g in systems.gmm_systems(cfg, paths)] == ["gmm"]  # no align/mono/final.mdl yet
    (paths.mono_dir).mkdir(parents=True)
    (paths.mono_dir / "final.mdl").write_text("")
    found = systems.gmm_systems(cfg, paths)
    assert [(g.name, g.context, g.graph_dir) for g in found] == [
        ("gmm", "triphone", paths.graph), ("gmm_mono", "monophone", paths.graph / "mono")]
    off = load_config("smoke", {"decode.gmm_monophone": "false"})
    assert [g.name for g in systems.gmm_systems(off, paths)] == ["gmm"]


def test_table5s_100_percent_baseline_is_decoded_only_when_the_config_trains_it(tmp_path) -> None:
    """A baseline_100 model left by an earlier run with distill.baseline_100=train is not decoded (nor
    reported) by a run whose config makes teacher 0 the baseline: the config decides, not the files."""
    cfg = load_config("smoke", {"teachers.num_teachers": "2", "distill.temperatures": "2"})
    paths = RunPaths(tmp_path / "exp")
    models = [TrainRunDir(d).model for d in paths.teacher_dirs(2)] + [TrainRunDir(paths.student_dir(2)).model]
    models += [TrainRunDir(paths.table5_dir(name)).model for name in TABLE5_RUNS]
    for m in models:
        m.parent.mkdir(parents=True, exist_ok=True)
        m.write_bytes(b"x")
    assert [s.name for s in systems.discover_systems(cfg, paths)] == [
        "teacher-0", "teacher-1", "ensemble", "distilled_T2", "baseline_3", "soft_3"]
    trained = load_config("smoke", {"teachers.num_teachers": "2", "distill.temperatures": "2",
                                    "distill.baseline_100": "train"})
    assert "baseline_100" in [s.name for s in systems.discover_systems(trained, paths)]


def test_a_gmm_on_other_features_than_ours_is_not_decoded() -> None:
    """An imported Kaldi model on LDA+MLLT features (40-dim) beside our MFCC + deltas (39-dim)."""
    feats = {"u1": np.zeros((7, 39), np.float32)}
    assert systems.gmm_feature_mismatch(39, feats) is None
    assert systems.gmm_feature_mismatch(40, feats) == (
        "its features are 40-dimensional, the recipe's MFCC + deltas 39-dimensional")
