"""A killed decode stage resumes (issue 31): finished (system, split) searches and finished chunks of
a split are kept as receipts under ``decode/<system>/receipts/`` and reused by the re-run, which
searches only the rest and writes the uninterrupted run's results."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.recipes.test_smoke import STAGES, recipe, smoke_args

pytestmark = pytest.mark.slow

MACHINE_FIGURES = {"search_rtf", "forward_s"}  # timings: the only keys a re-run may change


def receipts(exp: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(finished split receipts, chunk receipts of unfinished splits): path -> mtime_ns (not the
    temp files of writes under way)."""
    splits = {str(p): p.stat().st_mtime_ns for p in (exp / "decode").glob("*/receipts/*.json")
              if not p.name.startswith(".")}
    chunks = {str(p): p.stat().st_mtime_ns for p in (exp / "decode").glob("*/receipts/*/chunk-*.json")
              if str(p.parent) + ".json" not in splits}
    return splits, chunks


def without_timings(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in MACHINE_FIGURES}


def test_a_killed_decode_resumes_and_redoes_only_unfinished_work(smoke_run, smoke_corpus, tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    for done in STAGES[: STAGES.index("decode")]:  # the finished stages up to the graph
        shutil.copytree(smoke_run / done, exp / done, symlinks=True)
    shutil.copy(smoke_run / "config.json", exp / "config.json")
    # chunks of 8 utterances: 3 per split of the smoke run's 20 dev and 20 test utterances (where,
    # not what: the stage's config hash and results stay those of the smoke run)
    args = [*smoke_args(smoke_corpus, exp), "--set", "decode.chunk_utts=8", "--force", "decode",
            "--stage", "decode", "--stop-stage", "decode"]
    proc = subprocess.Popen([sys.executable, "-m", "asr_kd.recipes.librispeech", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while True:  # kill with two finished splits and a later split under way
        splits, chunks = receipts(exp)
        if len(splits) >= 2 and chunks:
            break
        assert proc.poll() is None, "the decode stage ended before it was killed"
        assert time.monotonic() < deadline, "no decode receipts within 300 s"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (exp / "decode" / "DONE.json").exists(), "killed inside the decode stage"
    splits, chunks = receipts(exp)  # what the killed run left
    assert splits and chunks

    res = recipe(*args, timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "no longer running" in res.stderr  # the dead run's lock taken over
    line = re.search(r"decode: reused (\d+) finished \(system, split\) results and (\d+) chunks.*; "
                     r"searched (\d+) chunks", res.stderr)
    assert line, res.stderr[-3000:]
    reused_splits, reused_chunks, searched = map(int, line.groups())
    assert (reused_splits, reused_chunks) == (len(splits), len(chunks))
    for where in {Path(p).parent.parent.parent.name + "/" + Path(p).parent.name for p in chunks}:
        assert f"decode: {where}: reused" in res.stderr
    summary = json.loads((exp / "decode" / "DONE.json").read_text())["summary"]
    assert summary["forward"]["device"] in ("cpu", "cuda")
    total = 2 * 3 * len(summary["systems"])  # dev and test, 3 chunks each
    assert searched == total - 3 * len(splits) - len(chunks), "only the unfinished chunks are searched again"
    # every (system, split) now has its finished receipt, and no chunk receipts are left
    splits, chunks = receipts(exp)
    assert len(splits) == 2 * len(summary["systems"]) and not chunks

    # the uninterrupted run's results, to the last hypothesis
    want = json.loads((smoke_run / "decode" / "DONE.json").read_text())["summary"]
    assert {n: without_timings(s) for n, s in summary["systems"].items()} == {
        n: without_timings(s) for n, s in want["systems"].items()}
    for name in want["systems"]:
        got_sum = json.loads((exp / "decode" / name / "summary.json").read_text())
        want_sum = json.loads((smoke_run / "decode" / name / "summary.json").read_text())
        assert without_timings(got_sum) == without_timings(want_sum), name
        for split in ("dev", "test"):
            hyp = smoke_run / "decode" / name / split / "hyp.txt"
            if hyp.exists():
                assert (exp / "decode" / name / split / "hyp.txt").read_text() == hyp.read_text(), (name, split)

    # one system's model file changed (a constant added to every output bias: other bytes, the same
    # posteriors up to rounding): a re-run searches that system only, and takes every other (system, split) from its receipt
    model = sorted((exp / "distill").glob("T*/model.pt"))[0]
    changed = "distilled_" + model.parent.name
    blob = torch.load(model, weights_only=False)
    blob["state_dict"]["output.bias"] = blob["state_dict"]["output.bias"] + 0.5
    torch.save(blob, model)
    res = recipe(*args, timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
    line = re.search(r"decode: reused (\d+) finished \(system, split\) results and (\d+) chunks.*; "
                     r"searched (\d+) chunks", res.stderr)
    assert line and tuple(map(int, line.groups())) == (2 * (len(want["systems"]) - 1), 0, 6), res.stderr[-3000:]
    again = json.loads((exp / "decode" / "DONE.json").read_text())["summary"]
    assert again["reused"] == sorted(f"{n}/{s}" for n in want["systems"] if n != changed for s in ("dev", "test"))
    for name in want["systems"]:  # the others' results are the receipts' (the changed one's can move in bf16)
        if name != changed:
            assert without_timings(again["systems"][name]) == without_timings(summary["systems"][name]), name

