"""Shared test fixtures: a smoke-size synthetic corpus generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.synthetic import ensure_corpus


@pytest.fixture(scope="session")
def smoke_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a smoke synthetic corpus (seed 0) in LibriSpeech layout; treat it as read-only."""
    root = tmp_path_factory.mktemp("smoke-corpus") / "synthetic-smoke-seed0"
    ensure_corpus(root, size="smoke", seed=0)
    return root
