"""The report's plots: frame accuracy and WER against T; the Table-5 runs' curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asr_kd.decoding.report.rows import Report
from asr_kd.fileio import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_vs_temperature(report: Report, out: Path) -> None:
    """Frame accuracy and WER of the students against T, with teacher and ensemble as lines."""
    plt = _pyplot()
    import matplotlib.ticker

    rows = [r for r in report.table1 if r.system.startswith("distilled_T")]
    ts = [float(r.system[len("distilled_T"):]) for r in rows]
    by = {r.system: r for r in report.table1}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "frame_acc", "test frame accuracy (%)"), (axes[1], "wer", "test WER (%)")):
        ax.plot(ts, [100 * (getattr(r, key) or float("nan")) for r in rows], "o-", label="distilled student")
        for name, style in (("baseline_mean", "--"), ("ensemble", ":")):
            if name in by and getattr(by[name], key) is not None:
                ax.axhline(100 * getattr(by[name], key), linestyle=style, color="gray" if name == "baseline_mean" else "k",
                           label="mean teacher" if name == "baseline_mean" else "ensemble")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(ts or [1])
        ax.set_xticklabels([f"{t:g}" for t in ts] or ["1"])
        ax.set_xlabel("temperature T")
        ax.set_ylabel(label)
        ax.legend()
    fig.tight_layout()
    _save_fig(fig, out)


def plot_table5_curves(curves: dict[str, list[dict[str, Any]]], out: Path, fraction: float = 0.03) -> None:
    """Per-epoch training (running) and held-out frame accuracy of the 3% hard and soft runs."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, color in (("baseline_3", "tab:red"), ("soft_3", "tab:blue")):
        hist = curves.get(name, [])
        epochs = [h.get("epoch", i) + 1 for i, h in enumerate(hist)]
        train = [100 * h["train_frame_acc_running"] for h in hist if "train_frame_acc_running" in h]
        held = [100 * h[k] for h in hist for k in ("test_frame_acc", "dev_frame_acc") if k in h][: len(hist)]
        heldname = "test" if hist and "test_frame_acc" in hist[0] else "dev"
        if train:
            ax.plot(epochs[: len(train)], train, "o-", color=color, label=f"{name} train")
        if held:
            ax.plot(epochs[: len(held)], held, "s--", color=color, label=f"{name} {heldname}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("frame accuracy (%)")
    ax.set_title(f"{100 * fraction:g}% of the training data: hard vs soft targets")
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    _save_fig(fig, out)


def _save_fig(fig: Any, out: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
