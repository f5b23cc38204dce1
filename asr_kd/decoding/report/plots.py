"""The report's plots: frame accuracy and WER against T; the Table-5 runs' curves. Error bars are
the report's 95 % bootstrap intervals over the test utterances, where it has them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asr_kd.decoding.report.rows import Report, Table1Row, TrainCurve, given
from asr_kd.fileio import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _yerr(points: list[float], intervals: list[list[float] | None]) -> list[list[float]]:
    """matplotlib's asymmetric ``yerr`` (in percent) for points with intervals (0 where none)."""
    lows, highs = [], []
    for p, ci in zip(points, intervals):
        lows.append(max(0.0, p - 100 * ci[0]) if ci else 0.0)
        highs.append(max(0.0, 100 * ci[1] - p) if ci else 0.0)
    return [lows, highs]


def plot_vs_temperature(report: Report, out: Path) -> None:
    """Frame accuracy and WER of the students against T, with teacher and ensemble as lines; the
    students' intervals as error bars, the mean teacher's and the ensemble's as bands."""
    plt = _pyplot()
    import matplotlib.ticker

    rows = [r for r in report.table1 if r.system.startswith("distilled_T")]
    ts = [float(r.system[len("distilled_T"):]) for r in rows]
    by = {r.system: r for r in report.table1}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "frame_acc", "test frame accuracy (%)"), (axes[1], "wer", "test WER (%)")):
        ys = [100 * (getattr(r, key) or float("nan")) for r in rows]
        cis = [_interval(r, key) for r in rows]
        if any(cis):
            ax.errorbar(ts, ys, yerr=_yerr(ys, cis), fmt="o-", capsize=3, label="distilled student (95 % CI)")
        else:
            ax.plot(ts, ys, "o-", label="distilled student")
        for name, style in (("baseline_mean", "--"), ("ensemble", ":")):
            if name in by and getattr(by[name], key) is not None:
                color = "gray" if name == "baseline_mean" else "k"
                ci = _interval(by[name], key)
                who = "mean teacher" if name == "baseline_mean" else "ensemble"
                ax.axhline(100 * getattr(by[name], key), linestyle=style, color=color,
                           label=f"{who} (band: 95 % CI)" if ci else who)
                if ci:
                    ax.axhspan(100 * ci[0], 100 * ci[1], color=color, alpha=0.1, linewidth=0)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(ts or [1])
        ax.set_xticklabels([f"{t:g}" for t in ts] or ["1"])
        ax.set_xlabel("temperature T")
        ax.set_ylabel(label)
        ax.legend()
    fig.tight_layout()
    _save_fig(fig, out)


def _interval(row: Table1Row, key: str) -> list[float] | None:
    return given(row.frame_acc_ci if key == "frame_acc" else row.wer_ci)


def curve_points(hist: list[dict[str, Any]], passes_per_epoch: int = 1,
                 ) -> tuple[list[float], list[float], list[float], str]:
    """A training run's dev checks (its ``history``) as points: epochs (Lightning counts passes over
    the data, ``passes_per_epoch`` of which make an epoch of a subset run), training (running) and
    held-out frame accuracy in percent, and the held-out split's name."""
    epochs = [(h.get("epoch", i) + 1) / passes_per_epoch for i, h in enumerate(hist)]
    train = [100 * h["train_frame_acc_running"] for h in hist if "train_frame_acc_running" in h]
    held = [100 * h[k] for h in hist for k in ("test_frame_acc", "dev_frame_acc") if k in h][: len(hist)]
    return epochs, train, held, "test" if hist and "test_frame_acc" in hist[0] else "dev"


def plot_table5_curves(curves: dict[str, TrainCurve], out: Path, fraction: float = 0.03,
                       passes_per_epoch: int = 1, report: Report | None = None) -> None:
    """Training (running) and held-out frame accuracy of the 3% hard and soft runs at each dev check,
    against epochs of the subset's run (``passes_per_epoch`` passes over the subset, which the
    history counts, make one); the decoded model's test frame accuracy with its interval (Table 5's),
    at its epoch, where ``report`` has it."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    t5 = {r.system: r for r in report.table5} if report else {}
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, color in (("baseline_3", "tab:red"), ("soft_3", "tab:blue")):
        curve = curves.get(name, TrainCurve([]))
        epochs, train, held, heldname = curve_points(curve.history, passes_per_epoch)
        if train:
            ax.plot(epochs[: len(train)], train, "o-", color=color, label=f"{name} train")
        if held:
            ax.plot(epochs[: len(held)], held, "s--", color=color, label=f"{name} {heldname}")
        row = t5.get(name)
        ci = given(row.test_frame_acc_ci) if row else None
        if epochs and row and row.test_frame_acc is not None and ci:
            x = epochs[-1] if curve.best_epoch is None else (curve.best_epoch + 1) / passes_per_epoch
            y = 100 * row.test_frame_acc
            ax.errorbar([x], [y], yerr=_yerr([y], [ci]), fmt="D", color=color, capsize=4,
                        label=f"{name} decoded, test (95 % CI)")
    ax.set_xlabel("epoch" if passes_per_epoch == 1 else f"epoch ({passes_per_epoch} passes over the subset)")
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
