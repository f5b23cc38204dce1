"""The align stage (built-in aligner) on the tiny corpus: files on disk, one label per frame, the summary's numbers."""

from __future__ import annotations

import shutil

import kaldiio
import numpy as np

from asr_kd.align.model import load_model
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
    """Issue 17: the align.max_fail_fraction stop is a one-line StageError naming failed.txt, the
    reasons and the --set that accepts the loss; an utterance without features is the features
    stage's loss, not counted again by align."""
    import pytest

    from asr_kd.align.viterbi import loss_reason, lost
    from asr_kd.runner import StageError

    paths = make_run_dir(tmp_path, tiny_corpus)
    dev = sorted(u for u in tiny_corpus.mfcc if u.startswith("spk1"))
    scp = paths.mfcc_scp("dev")
    feats = {u: tiny_corpus.mfcc[u] for u in dev[1:]}  # dev[0] has no features
    feats[dev[1]] = feats[dev[1]][:2]  # two frames cannot hold the transcript
    kaldiio.save_ark(str(scp.with_suffix(".ark")), feats, scp=str(scp))
    cfg = load_config("smoke", {"align.context": "monophone", "align.mono_iters": "3", "align.mono_gaussians": "100",
                                "align.num_jobs": "1"})
    with pytest.raises(StageError) as e:
        run_align(cfg, paths)
    msg = str(e.value)
    assert isinstance(e.value, StageError) and "\n" not in msg
    assert f"2 of {len(dev)} dev utterances failed to align" in msg and "no_features 1" in msg
    assert str(paths.align_failed("dev")) in msg
    assert f"--set align.max_fail_fraction={2 / len(dev):g}" in msg
    failed = dict(line.split(" ", 1) for line in paths.align_failed("dev").read_text().splitlines())
    assert set(failed) == {dev[0], dev[1]}
    assert loss_reason(failed[dev[0]]) is None and lost(failed)["counts"] in ({"too_few_frames": 1},
                                                                             {"no_alignment_within_beam": 1})
