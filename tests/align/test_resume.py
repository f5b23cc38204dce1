"""A killed align stage resumes (asr_kd.align.resume): the trained systems from their receipts,
the chunked final pass from its last finished chunk; the files and the summary are those of an
uninterrupted run."""

from __future__ import annotations

import json
import logging

import pytest

from asr_kd.stages import _align as builtin
import asr_kd.align.stream as stream
from asr_kd.config import load_config
from asr_kd.paths import SPLITS
from asr_kd.stages.align import run as run_align
from tests.align.test_builtin import _outputs, make_run_dir

MONO = {"align.context": "monophone", "align.mono_iters": "3", "align.mono_gaussians": "100", "align.num_jobs": "1",
        "align.chunk_utts": "5", "align.max_fail_fraction": "0.25"}
CHUNKS = {"train": 7, "dev": 4, "test": 4}  # 32, 16 and 16 utterances in chunks of 5


class Killed(Exception):
    """Stands for the kill: raised inside the stage."""


def same_summary(a: dict, b: dict) -> bool:
    """Equal as the stage marker stores them (JSON), wall times (``*_s``, ``*_seconds``) aside."""
    def norm(v):
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items() if not k.endswith(("_s", "_seconds"))}
        return v
    return norm(json.loads(json.dumps(a))) == norm(json.loads(json.dumps(b)))


def counting_realign(monkeypatch, kill_after: int | None = None) -> list[int]:
    """Count the final pass's chunks as they are aligned (one realign call each, num_jobs=1);
    raise :class:`Killed` on the chunk after ``kill_after``."""
    calls: list[int] = []
    real = stream.realign

    def realign(*args, **kwargs):
        if kill_after is not None and len(calls) == kill_after:
            raise Killed
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(stream, "realign", realign)
    return calls


def refuse(monkeypatch, module, name: str) -> None:
    def refused(*args, **kwargs):
        raise Killed(f"{name} ran")
    monkeypatch.setattr(module, name, refused)


def test_a_killed_chunked_final_pass_resumes_at_its_next_chunk_with_the_same_labels_and_phase_receipts_are_keyed(
        tmp_path, tiny_corpus, monkeypatch, caplog):
    cfg = load_config("smoke", MONO)
    whole = make_run_dir(tmp_path / "whole", tiny_corpus)
    want = run_align(cfg, whole)

    paths = make_run_dir(tmp_path / "killed", tiny_corpus)
    done_before_kill = CHUNKS["train"] + 2  # killed in dev's third chunk
    with monkeypatch.context() as m:
        counting_realign(m, kill_after=done_before_kill)
        with pytest.raises(Killed):
            run_align(cfg, paths)
    assert (paths.align_resume / "train.json").exists() and not (paths.align_resume / "train").exists()
    assert len(list((paths.align_resume / "dev").glob("chunk-*.json"))) == 2

    refuse(monkeypatch, builtin, "train")  # the monophone comes from its receipt
    calls = counting_realign(monkeypatch)
    # max_fail_fraction (as num_jobs) changes what loss is accepted, not what is computed: same key
    with caplog.at_level(logging.INFO):
        got = run_align(load_config("smoke", {**MONO, "align.max_fail_fraction": "0.5"}), paths)
    assert len(calls) == sum(CHUNKS.values()) - done_before_kill  # only dev's last 2 chunks and test's 4
    assert "monophone system found" in caplog.text and "2 of 4 chunks aligned by an earlier run" in caplog.text
    assert _outputs(paths) == _outputs(whole)
    assert same_summary(got, want)
    assert (paths.final_mdl.read_bytes(), paths.tree.read_bytes()) == (whole.final_mdl.read_bytes(),
                                                                       whole.tree.read_bytes())
    assert not any((paths.align_resume / s).exists() for s in SPLITS)  # chunk files go once a split is joined

    # another align config: the monophone receipt is not this run's, so the system is trained again
    with pytest.raises(Killed, match="train ran"):
        run_align(load_config("smoke", {**MONO, "align.mono_gaussians": "80"}), paths)


def test_a_triphone_run_killed_in_triphone_training_keeps_its_monophone_and_ends_as_an_uninterrupted_run(
        tmp_path, tiny_corpus, monkeypatch):
    cfg = load_config("smoke", {"align.mono_iters": "4", "align.mono_gaussians": "120", "align.tri_leaves": "100",
                                "align.tri_gaussians": "200", "align.tri_iters": "2", "align.tree_min_count": "20",
                                "align.num_jobs": "1", "align.mono_utts": "28", "align.chunk_utts": "8",
                                "align.max_fail_fraction": "0.25"})
    whole = make_run_dir(tmp_path / "whole", tiny_corpus)
    want = run_align(cfg, whole)

    paths = make_run_dir(tmp_path / "killed", tiny_corpus)
    with monkeypatch.context() as m:
        refuse(m, builtin, "train_triphone_stage")
        with pytest.raises(Killed):
            run_align(cfg, paths)
    assert (paths.align_resume / "monophone.json").exists() and not (paths.align_resume / "triphone.json").exists()
    with monkeypatch.context() as m:
        refuse(m, builtin, "train")
        got = run_align(cfg, paths)
    assert _outputs(paths) == _outputs(whole) and same_summary(got, want)
    assert paths.mono_mdl.read_bytes() == whole.mono_mdl.read_bytes()

    # a re-run of the finished stage (--force, same config): every system and split from its receipt
    refuse(monkeypatch, builtin, "train")
    refuse(monkeypatch, builtin, "train_triphone_stage")
    refuse(monkeypatch, stream, "realign")
    assert same_summary(run_align(cfg, paths), want) and _outputs(paths) == _outputs(whole)
