"""The align stage (built-in aligner) on the tiny corpus: files on disk, one label per frame, the summary's numbers."""

from __future__ import annotations

import shutil

import kaldiio
import numpy as np

from asr_kd.align.model import load_model
from asr_kd.align.viterbi import NO_FEATURES
from asr_kd.config import load_config
from asr_kd.data.manifest import Utterance, write_manifest
from asr_kd.data.scp import load_scp
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.stages.align import run as run_align


def make_run_dir(tmp_path, corpus) -> RunPaths:
    paths = RunPaths(tmp_path / "exp")
    shutil.copytree(corpus.lang_dir, paths.lang)
    members = {"train": sorted(corpus.mfcc), "dev": sorted(u for u in corpus.mfcc if u.startswith("spk1")),
               "test": sorted(u for u in corpus.mfcc if u.startswith("spk0"))}
    for split in SPLITS:
        utts = [Utterance(id=u, speaker=corpus.utt2spk[u], chapter="1", audio=f"{u}.wav",
                          text=" ".join(corpus.text[u]), num_samples=16000, sample_rate=16000)
                for u in members[split]]
        write_manifest(paths.manifest(split), utts)
        scp = paths.mfcc_scp(split)
        scp.parent.mkdir(parents=True, exist_ok=True)
        kaldiio.save_ark(str(scp.with_suffix(".ark")), {u: corpus.mfcc[u] for u in members[split]}, scp=str(scp))
    return paths


def test_align_stage_writes_one_label_per_frame(tmp_path, tiny_corpus):
    paths = make_run_dir(tmp_path, tiny_corpus)
    cfg = load_config("smoke", {"align.context": "monophone", "align.mono_iters": "6", "align.mono_gaussians": "200", "align.num_jobs": "1"})
    summary = run_align(cfg, paths)

    assert summary["num_pdfs"] == load_model(paths.align).num_pdfs
    assert summary["success_rate"] == 1.0 and summary["context"] == "monophone"
    assert len(summary["loglike_per_frame"]) == 6
    assert summary["loglike_per_frame"][-1] > summary["loglike_per_frame"][0]
    assert summary["utterances_per_split"] == {"train": 32, "dev": 16, "test": 16}
    assert 0.0 < summary["silence_fraction"] < 1.0
    assert summary["pdfs_with_zero_frames"] >= 0
    assert summary["dev_loglike_per_frame"] < 0 and summary["train_loglike_per_frame"] < 0
    for split in SPLITS:
        pdfs = load_scp(paths.pdf_scp(split))
        alis = load_scp(paths.ali_scp(split))
        assert sorted(pdfs) == sorted(alis)
        for utt in pdfs:
            pdf, ali = np.asarray(pdfs[utt]), np.asarray(alis[utt])
            assert pdf.dtype == np.int32 and pdf.shape == (tiny_corpus.mfcc[utt].shape[0],)
            assert ali.shape == pdf.shape
            assert 0 <= pdf.min() and pdf.max() < summary["num_pdfs"]
        assert paths.align_failed(split).exists()


def test_too_many_failures_stop_in_one_line_naming_failed_txt_and_the_key(tmp_path, tiny_corpus):
    """Issue 17: the align.max_fail_fraction stop is a one-line InputError naming failed.txt, the
    reasons and the --set that accepts the loss; an utterance without features is the features
    stage's loss, not counted again by align."""
    import pytest

    from asr_kd.align.viterbi import loss_reason, lost
    from asr_kd.errors import InputError

    paths = make_run_dir(tmp_path, tiny_corpus)
    dev = sorted(u for u in tiny_corpus.mfcc if u.startswith("spk1"))
    scp = paths.mfcc_scp("dev")
    feats = {u: tiny_corpus.mfcc[u] for u in dev[1:]}  # dev[0] has no features
    feats[dev[1]] = feats[dev[1]][:2]  # two frames cannot hold the transcript
    kaldiio.save_ark(str(scp.with_suffix(".ark")), feats, scp=str(scp))
    cfg = load_config("smoke", {"align.context": "monophone", "align.mono_iters": "3", "align.mono_gaussians": "100",
                                "align.num_jobs": "1"})
    with pytest.raises(InputError) as e:
        run_align(cfg, paths)
    msg = str(e.value)
    assert isinstance(e.value, InputError) and "\n" not in msg
    assert f"2 of {len(dev)} dev utterances failed to align" in msg and "no_features 1" in msg
    assert str(paths.align_failed("dev")) in msg
    assert f"--set align.max_fail_fraction={2 / len(dev):g}" in msg
    failed = dict(line.split(" ", 1) for line in paths.align_failed("dev").read_text().splitlines())
    assert set(failed) == {dev[0], dev[1]}
    assert loss_reason(failed[dev[0]]) is None and lost(failed)["counts"] in ({"too_few_frames": 1},
                                                                             {"no_alignment_within_beam": 1})


def _outputs(paths: RunPaths) -> dict[str, bytes]:
    names = ("ali.ark", "ali.scp", "pdf.ark", "pdf.scp", "failed.txt")
    return {f"{split}/{n}": (paths.align / split / n).read_bytes() for split in SPLITS for n in names}


def test_chunked_alignment_writes_the_same_labels_as_the_in_memory_pass(tmp_path, tiny_corpus):
    """Issue 14: aligning in chunks (parallel workers, features streamed from mfcc.scp) gives the
    in-memory pass's files byte for byte: labels, failed.txt, and the counts of the summary."""
    dev = sorted(u for u in tiny_corpus.mfcc if u.startswith("spk1"))
    runs = {}
    for name, chunk, jobs in (("memory", "0", "1"), ("chunked", "5", "2")):
        paths = make_run_dir(tmp_path / name, tiny_corpus)
        scp = paths.mfcc_scp("dev")
        kaldiio.save_ark(str(scp.with_suffix(".ark")), {u: tiny_corpus.mfcc[u] for u in dev[1:]}, scp=str(scp))
        cfg = load_config("smoke", {"align.context": "monophone", "align.mono_iters": "4", "align.mono_gaussians": "150",
                                    "align.num_jobs": jobs, "align.chunk_utts": chunk, "align.max_fail_fraction": "0.25"})
        runs[name] = (run_align(cfg, paths), _outputs(paths))
    (memory, mem_files), (chunked, chunk_files) = runs["memory"], runs["chunked"]
    assert chunk_files == mem_files
    assert chunked["final_pass"] == "chunks of 5 utterances" and memory["final_pass"] == "in memory"
    assert chunked["splits"]["dev"]["failed"] == 1 and chunked["splits"]["dev"]["failed_examples"] == {dev[0]: NO_FEATURES}
    for split in SPLITS:
        for key in ("utterances", "aligned", "failed", "frames", "silence_fraction", "retried", "lost"):
            assert chunked["splits"][split][key] == memory["splits"][split][key], (split, key)
        assert np.isclose(chunked["splits"][split]["loglike_per_frame"], memory["splits"][split]["loglike_per_frame"])
    assert chunked["pdfs_with_zero_frames"] == memory["pdfs_with_zero_frames"]


def test_subsets_train_on_the_shortest_utterances_and_every_utterance_is_aligned(tmp_path, tiny_corpus):
    """align.mono_utts trains on the shortest utterances only; the final pass still labels them all."""
    paths = make_run_dir(tmp_path, tiny_corpus)
    cfg = load_config("smoke", {"align.context": "monophone", "align.mono_iters": "4", "align.mono_gaussians": "150",
                                "align.num_jobs": "1", "align.mono_utts": "20", "align.chunk_utts": "7",
                                "align.max_fail_fraction": "0.25"})
    summary = run_align(cfg, paths)
    train = summary["splits"]["train"]
    assert summary["monophone"]["train_utterances"] == 20
    assert train["utterances"] == 32 and train["aligned"] + train["failed"] == 32 and train["aligned"] > 20
    failed = {line.split(" ", 1)[0] for line in paths.align_failed("train").read_text().splitlines()}
    assert sorted(load_scp(paths.pdf_scp("train"))) == sorted(set(tiny_corpus.mfcc) - failed)


def test_training_subset_picks_the_shortest_or_spreads_evenly():
    from asr_kd.align.stream import training_subset

    utts = [Utterance(id=f"u{i}", speaker="s", chapter="1", audio="a.wav", text="A", num_samples=n,
                      sample_rate=16000) for i, n in enumerate((50, 10, 40, 20, 30, 10))]
    assert [u.id for u in training_subset(utts, 3, "shortest")] == ["u1", "u3", "u5"]  # in manifest order
    assert [u.id for u in training_subset(utts, 3, "spread")] == ["u0", "u2", "u4"]
    assert training_subset(utts, 0, "shortest") == utts and training_subset(utts, 6, "spread") == utts


def test_triphone_system_trains_on_its_own_subset_and_every_split_is_labelled_as_in_memory(tmp_path, tiny_corpus):
    """The Kaldi shape end to end: monophone on the shortest, triphones on a spread subset, every
    utterance of every split aligned with the triphone model, in chunks (2 jobs) or in memory: the
    same files."""
    runs = {}
    for chunk in ("0", "8"):
        paths = make_run_dir(tmp_path / chunk, tiny_corpus)
        cfg = load_config("smoke", {"align.mono_iters": "6", "align.mono_gaussians": "150", "align.tri_leaves": "150",
                                    "align.tri_gaussians": "300", "align.tri_iters": "3", "align.tree_min_count": "20",
                                    "align.num_jobs": "2", "align.mono_utts": "28", "align.tri_utts": "30",
                                    "align.chunk_utts": chunk, "align.max_fail_fraction": "0.25"})
        runs[chunk] = (run_align(cfg, paths), _outputs(paths))
        summary = runs[chunk][0]
        assert summary["context"] == "triphone" and summary["monophone"]["train_utterances"] == 28
        assert summary["tri_train_utterances"] == 30 and summary["monophone"]["dev_loglike_per_frame"] < 0
        assert load_model(paths.align).num_pdfs == summary["num_pdfs"]
        for split in SPLITS:
            pdfs = load_scp(paths.pdf_scp(split))
            assert len(pdfs) == summary["splits"][split]["aligned"]
            assert all(np.asarray(p).max() < summary["num_pdfs"] for p in pdfs.values())
    assert runs["8"][1] == runs["0"][1]
    assert runs["8"][0]["splits"]["train"]["aligned"] > 0
