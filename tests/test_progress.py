"""Progress bars: full on a terminal, a few lines in a batch log, off on request."""

from __future__ import annotations

import io

import pytest

from asr_kd import progress as P


def _updates(text: str) -> int:
    return text.count("\r") + text.count("\n")


@pytest.mark.parametrize("env, want", [("0", "off"), ("1", "tty"), ("", "batch")])
def test_mode_follows_env_then_stderr(monkeypatch, env, want) -> None:
    monkeypatch.setenv("ASR_KD_PROGRESS", env)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    assert P.mode() == want


def test_batch_log_gets_a_few_lines_not_a_flood(monkeypatch) -> None:
    monkeypatch.setenv("ASR_KD_PROGRESS", "")
    monkeypatch.setattr("sys.stderr", io.StringIO())
    batch = io.StringIO()
    assert sum(P.progress(range(20000), file=batch, mininterval=0, miniters=1)) == sum(range(20000))
    monkeypatch.setenv("ASR_KD_PROGRESS", "1")
    tty = io.StringIO()
    for _ in P.progress(range(20000), file=tty, mininterval=0, miniters=1):
        pass
    assert _updates(batch.getvalue()) <= 3 < 1000 < _updates(tty.getvalue())


def test_off_disables_and_lightning_follows(monkeypatch) -> None:
    from lightning.pytorch.callbacks import TQDMProgressBar

    monkeypatch.setenv("ASR_KD_PROGRESS", "0")
    out = io.StringIO()
    list(P.progress(range(10), file=out))
    assert out.getvalue() == ""
    assert P.lightning_callbacks() == ([], False)
    monkeypatch.setenv("ASR_KD_PROGRESS", "")
    monkeypatch.setattr("sys.stderr", io.StringIO())
    callbacks, enabled = P.lightning_callbacks()
    assert enabled and isinstance(callbacks[0], TQDMProgressBar)
    assert callbacks[0].refresh_rate == P.BATCH_LOG_TRAIN_STEPS
