"""Progress bars (tqdm for data prep, alignment and decoding; Lightning's bar for training) that
stay readable in batch logs.

On a terminal the bars behave as usual. Under DDP only rank 0 shows bars. When stderr is not a terminal (SLURM, CI, ``> log 2>&1``)
a tqdm bar refreshes at most every :data:`BATCH_LOG_INTERVAL_S` seconds and Lightning's every
:data:`BATCH_LOG_TRAIN_STEPS` steps, so a log holds a few lines per stage instead of thousands of
carriage-return updates. ``ASR_KD_PROGRESS=0`` turns every bar off, ``=1`` forces terminal behaviour.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm

BATCH_LOG_INTERVAL_S = 60.0
BATCH_LOG_TRAIN_STEPS = 1000


def mode() -> str:
    """``tty`` (full bars), ``batch`` (sparse bars) or ``off``, from ASR_KD_PROGRESS and stderr
    (always ``off`` on DDP ranks other than 0)."""
    from asr_kd.parallel import global_rank

    if global_rank() != 0:
        return "off"
    env = os.environ.get("ASR_KD_PROGRESS", "").strip()
    if env == "0":
        return "off"
    if env == "1":
        return "tty"
    try:
        return "tty" if sys.stderr.isatty() else "batch"
    except (AttributeError, ValueError):  # stderr replaced or closed
        return "batch"


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` with the refresh interval of :func:`mode`."""
    m = mode()
    if m == "off":
        kwargs["disable"] = True
    elif m == "batch":
        kwargs["mininterval"] = max(kwargs.get("mininterval", 0.1), BATCH_LOG_INTERVAL_S)
    return tqdm(iterable, **kwargs)


def lightning_callbacks() -> tuple[list[Any], bool]:
    """(callbacks, enable_progress_bar) for a Lightning Trainer under :func:`mode`."""
    m = mode()
    if m == "off":
        return [], False
    if m == "batch":
        from lightning.pytorch.callbacks import TQDMProgressBar

        return [TQDMProgressBar(refresh_rate=BATCH_LOG_TRAIN_STEPS)], True
    return [], True
