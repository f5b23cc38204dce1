"""Compact window batches: frames travel once per block, windows are spliced on the training device.

The materialised batches of :mod:`asr_kd.data.windows` carry every window whole, ``x`` float32
``(B, 26, 40)``: 4,160 bytes a window, 52x the 80 bytes of a float16 frame, through worker
processes and the host-to-device copy. A *compact* batch carries instead

* ``frames`` (n, 40), storage dtype (float16): the padded frames of the block the windows come from,
  the same tensor for every batch of that block (worker processes share it once, by handle);
* ``block`` (3,) int64 on the CPU: the block's key (a token of the iterator that made it, its serial
  number there) and the window width;
* ``start`` (B,) int64: the row of each window's first frame in ``frames``;
* ``y`` and what the batch adds (``ids``; ``topk_ids``/``topk_p`` in their stored dtypes, int16 /
  float16, and only the student's temperature when the loader was asked for one column).

:class:`WindowSplicer` moves a compact batch to the device (each block's frames once: it keeps the
latest block of every iterator there, so an in-memory training set's frames stay on the device for
the whole fit) and :func:`splice_windows` gathers the windows there by index. The result is the
materialised batch, value for value: ``{"x": (B, 26, 40) float32, "y": (B,), ...}``, stored targets as
int64 / float32. The data module does both in Lightning's ``transfer_batch_to_device`` /
``on_after_batch_transfer`` hooks (:class:`asr_kd.data.datamodule.FrameDataModule`).

On a CPU "device" the splicer keeps a float32 copy of each block: gathering float32 rows with
``index_select`` is ~5x faster there than indexing float16 rows and casting, as the materialised
path does (``benchmarks/bench_data.py``).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

COMPACT_COLUMNS = ("frames", "block", "start", "y")
Batch = dict[str, torch.Tensor]


def new_token() -> int:
    """A random 62-bit key for one iterator's blocks (not drawn from any seeded generator)."""
    return uuid.uuid4().int >> 66


def is_compact(batch: object) -> bool:
    return isinstance(batch, dict) and "block" in batch and "start" in batch


class CompactBatches:
    """Turns the pieces of one batch (``(block, positions)`` pairs) into a compact batch tuple.

    ``token`` keys the blocks of one iterator (a fixed one for a dataset whose frames never change);
    a block gets a new serial number whenever its frames tensor changes. A batch whose windows come
    from several blocks (at a block's end) gets a block of its own: its windows' rows, copied.
    ``column``: keep only this temperature of stored targets that have all of them.
    """

    def __init__(self, width: int, token: int | None = None, column: int | None = None) -> None:
        self.width, self.column = width, column
        self.token = new_token() if token is None else token
        self._serial, self._frames = 0, None

    def __call__(self, pieces: Sequence[tuple[Any, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        """``pieces``: (``asr_kd.data.windows.FrameBlock``, positions in its windows) pairs, in batch order."""
        first = pieces[0][0]
        if all(b.frames is first.frames for b, _ in pieces):
            frames = first.frames
            start = _cat([b.starts[i] for b, i in pieces])
        else:
            offsets = torch.arange(self.width)
            frames = torch.cat([b.frames.index_select(0, (b.starts[i][:, None] + offsets).reshape(-1))
                                for b, i in pieces])
            start = torch.arange(sum(len(i) for _, i in pieces)) * self.width
        if frames is not self._frames:
            self._serial, self._frames = self._serial + 1, frames
        out: tuple[torch.Tensor, ...] = (frames, torch.tensor([self.token, self._serial, self.width]), start,
                                         _cat([b.labels[i] for b, i in pieces]))
        if first.ids is not None:
            out = (*out, _cat([b.ids[i] for b, i in pieces]))
        if first.soft is not None:
            soft = [_cat([b.soft[j][i] for b, i in pieces]) for j in (0, 1)]
            if self.column is not None and soft[0].dim() == 3:
                soft = [s[:, self.column] for s in soft]
            out = (*out, *soft)
        return out


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def per_window(name: str) -> bool:
    """Whether column ``name`` of a compact batch has one row per window (what DDP ranks slice)."""
    return name not in ("frames", "block")


class WindowSplicer:
    """Moves compact batches to the device, each block's frames once (the latest block per token).

    ``max_tokens`` bounds the blocks held (one per iterator: a streaming loader's workers, the
    validation set, an in-memory training set); the oldest go first.
    """

    def __init__(self, max_tokens: int = 16) -> None:
        self.max_tokens = max_tokens
        self._held: OrderedDict[int, tuple[int, torch.Tensor]] = OrderedDict()

    def clear(self) -> None:
        self._held.clear()

    def frames_on(self, frames: torch.Tensor, block: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        token, serial, _ = (int(v) for v in block.tolist())
        held = self._held.get(token)
        if held is not None and held[0] == serial:
            self._held.move_to_end(token)
            return held[1]
        moved = frames.to(device, non_blocking=frames.is_pinned())
        if moved.device.type == "cpu":
            moved = moved.float()  # float32 rows gather faster on a CPU (module docstring)
        self._held[token] = (serial, moved)
        self._held.move_to_end(token)
        while len(self._held) > self.max_tokens:
            self._held.popitem(last=False)
        return moved

    def to_device(self, batch: Batch, device: torch.device | str) -> Batch:
        """The compact batch on ``device`` (``block`` stays on the CPU: it is read there)."""
        out: Batch = {}
        for name, t in batch.items():
            if name == "frames":
                out[name] = self.frames_on(t, batch["block"], device)
            elif name == "block":
                out[name] = t
            else:
                out[name] = t.to(device, non_blocking=t.is_pinned())
        return out


def splice_windows(batch: Batch) -> Batch:
    """A compact batch (on its device) as the materialised batch: ``x`` (B, width, D) float32 gathered
    from ``frames`` by ``start``, then ``y`` and the other columns (stored targets as int64 / float32)."""
    frames, start = batch["frames"], batch["start"]
    width = int(batch["block"][2])
    rows = (start[:, None] + torch.arange(width, device=start.device)).reshape(-1)
    x = frames.index_select(0, rows).view(start.shape[0], width, frames.shape[1]).float()
    out: Batch = {"x": x}
    for name, t in batch.items():
        if name in ("frames", "block", "start"):
            continue
        out[name] = t.long() if name == "topk_ids" else t.float() if name == "topk_p" else t
    return out
