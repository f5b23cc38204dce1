"""Shared test fixtures, made once per test session: a smoke-size synthetic corpus, and one whole
smoke-preset run of the recipe on it (for the end-to-end tests of several modules)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.synthetic import ensure_corpus


@pytest.fixture(scope="session")
def smoke_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a smoke synthetic corpus (seed 0) in LibriSpeech layout; treat it as read-only."""
    root = tmp_path_factory.mktemp("smoke-corpus") / "synthetic-smoke-seed0"
    ensure_corpus(root, size="smoke", seed=0)
    return root


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, smoke_corpus: Path) -> Path:
    """Run directory of one uninterrupted ``--preset smoke`` run on ``smoke_corpus``; treat it as
    read-only (copy it to change it)."""
    exp = tmp_path_factory.mktemp("smoke") / "exp"
    res = subprocess.run([sys.executable, "-m", "asr_kd.recipes.librispeech", "--preset", "smoke", "--data-root",
                          str(smoke_corpus), "--exp-dir", str(exp)], capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
    return exp
