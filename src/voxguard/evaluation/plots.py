"""The report's figures as PNG files, drawn on matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist

import numpy as np

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
except ImportError as exc:  # matplotlib comes with the "eval" extra, not with the service
    raise ImportError(
        "voxguard eval draws its figures with matplotlib: pip install 'voxguard[eval]'"
    ) from exc

from .metrics import ThresholdMetrics, det_curve
from .summary import LabelledScores

SCORE_AXIS = "score = logit(bona fide) − logit(spoof)   (higher = more human)"
_DET_TICKS = (
    *(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4),
    *(0.6, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9998, 0.9999),
)
_probit = np.vectorize(NormalDist().inv_cdf, otypes=[float])


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def histogram_figure(
    labelled: LabelledScores, eer_threshold: float | None, score_cut: float
) -> Figure | None:
    """Score histograms of both classes on shared bins, with the EER and service thresholds marked; the
    legend sits below the axes so that it never hides a bar."""
    everything = np.concatenate([labelled.bonafide, labelled.spoof])
    if not everything.size:
        return None
    figure = _figure(6.4, 4.2)
    ax = figure.add_subplot()
    bins = np.histogram_bin_edges(everything, bins=min(60, max(10, everything.size // 3)))
    for name, scores, colour in (
        ("bona fide", labelled.bonafide, "tab:blue"),
        ("spoof", labelled.spoof, "tab:red"),
    ):
        if scores.size:
            ax.hist(scores, bins=bins, alpha=0.6, color=colour, label=f"{name} ({scores.size})")
    if eer_threshold is not None:
        ax.axvline(eer_threshold, color="black", linestyle="--", label=f"EER threshold ({eer_threshold:.2f})")
    if math.isfinite(score_cut):
        ax.axvline(score_cut, color="tab:gray", linestyle=":", label=f"service threshold ({score_cut:.2f})")
    ax.set_title("Scores by class")
    ax.set_xlabel(SCORE_AXIS)
    ax.set_ylabel("files")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.legend(loc="outside lower center", ncols=2, fontsize="small")
    return figure


def score_histogram(
    path: Path, labelled: LabelledScores, eer_threshold: float | None, score_cut: float
) -> Path | None:
    """``histogram_figure`` as a PNG (None when nothing was scored)."""
    figure = histogram_figure(labelled, eer_threshold, score_cut)
    if figure is None:
        return None
    figure.savefig(path)
    return path


def det_figure(labelled: LabelledScores, eer: float) -> Figure:
    """DET curve on normal-deviate axes, as in ASVspoof papers; rates of 0 or 1 sit on the axis edges.

    With an EER of 0 the curve is only the corner of the axes: the report says so instead of drawing it.
    """
    curve = det_curve(labelled.bonafide, labelled.spoof)
    # The smallest non-zero rate is 1/n; a margin of half that (at most 0.01 %) keeps every point visible.
    edge = max(1e-4, 0.5 / max(labelled.bonafide.size, labelled.spoof.size))
    lo, hi = _probit(edge), _probit(1 - edge)
    figure = _figure(4.8, 4.8)
    ax = figure.add_subplot()
    # Consecutive DET points differ in one rate (one trial moves), so straight lines draw the staircase.
    ax.plot(
        _probit(np.clip(curve.false_alarm, edge, 1 - edge)),
        _probit(np.clip(curve.miss, edge, 1 - edge)),
        color="tab:blue",
    )
    ax.plot([lo, hi], [lo, hi], color="tab:gray", linestyle=":", linewidth=0.8)
    point = _probit(min(max(eer, edge), 1 - edge))
    ax.plot([point], [point], "o", color="black", label=f"EER {eer:.2%}")
    ticks = [t for t in _DET_TICKS if edge <= t <= 1 - edge]
    labels = [f"{100 * t:g}" for t in ticks]
    ax.set_xticks(_probit(ticks), labels)
    ax.set_yticks(_probit(ticks), labels)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_title(f"DET curve (EER {eer:.2%})")
    ax.set_xlabel("false-alarm rate: spoof accepted (%)")
    ax.set_ylabel("miss rate: bona fide rejected (%)")
    ax.grid(True, linewidth=0.4)
    ax.legend(loc="upper right", fontsize="small")
    return figure


def det_plot(path: Path, labelled: LabelledScores, eer: float) -> Path:
    """``det_figure`` as a PNG."""
    det_figure(labelled, eer).savefig(path)
    return path


def confusion_figure(metrics: ThresholdMetrics, threshold: float) -> Figure:
    """Counts by actual class (rows) and service verdict (columns), with each row's share."""
    matrix = np.array(
        [
            [metrics.true_negative, metrics.false_positive],
            [metrics.false_negative, metrics.true_positive],
        ]
    )
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    figure = _figure(4.2, 3.9)
    ax = figure.add_subplot()
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if shares[row, col] > 0.6 else "black"
        ax.text(col, row, f"{count}\n{shares[row, col]:.0%}", ha="center", va="center", color=colour)
    ax.set_xticks([0, 1], ["REAL", "FAKE"])
    ax.set_yticks([0, 1], ["bona fide", "spoof"])
    ax.set_title("Verdicts by actual class")
    ax.set_xlabel(f"verdict (FAKE when fake probability ≥ {threshold:g})")
    ax.set_ylabel("actual")
    return figure


def confusion_plot(path: Path, metrics: ThresholdMetrics, threshold: float) -> Path:
    """``confusion_figure`` as a PNG."""
    confusion_figure(metrics, threshold).savefig(path)
    return path
