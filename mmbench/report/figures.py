"""Render: the paper's figures from aggregated runs (matplotlib, Agg backend; PNG and PDF).

Figure numbers follow Wesego & Rooshenas 2024 (TMLR): 5 unconditional coherence; 6 and 7 scaling with
the number of trained modalities; 8, 9 FID and coherence of the last modality given the first k; 11 the
guidance / sampler-steps ablation; 13 coherence of the first modality given k others; 14, 15 per-modality
coherence and FID given the rest; 20 mode coverage. A figure whose data the runs lack is not drawn; the
report lists it with the reason. Every figure's title names the budget that made it (a ``smoke`` figure says
so on the image), and sample grids are redrawn with their rows labelled (given data or generated).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmbench import atomic
from mmbench.report.aggregate import Aggregate

FORMATS = ("png", "pdf")


@dataclass(frozen=True)
class FigureResult:
    name: str
    files: list[Path]
    reason: str | None = None  # why it was not drawn


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# a PDF carries its creation time unless told not to: without it the same store gives byte-identical figures
_NO_DATE = {"pdf": {"CreationDate": None}}


def _save(fig: Any, folder: Path, name: str) -> list[Path]:
    files = []
    for fmt in FORMATS:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, bbox_inches="tight", dpi=150, metadata=_NO_DATE.get(fmt))
        path = folder / f"{name}.{fmt}"
        atomic.write_bytes(path, buffer.getvalue())
        files.append(path)
    _pyplot().close(fig)
    return files


MARKERS = "os^vDP*Xph<>"


def _style(i: int) -> dict[str, Any]:
    """A distinct colour (tab20) and marker per row, so a dozen models stay tellable apart."""
    cmap = _pyplot().get_cmap("tab20")
    return {"color": cmap(i % 20), "marker": MARKERS[i % len(MARKERS)]}


def _finish(ax: Any, xlabel: str, ylabel: str, integer_x: bool = True) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


# --------------------------------------------------------------------------------------------- curves


def _curve(agg: Aggregate, variant: str, pattern: str) -> tuple[list[int], list[float], list[float]]:
    """``(x, mean, std)`` of keys matching ``pattern`` with one integer group (e.g. ``k(\\d+)``)."""
    regex = re.compile(pattern)
    points = []
    for key in agg.keys():
        match = regex.fullmatch(key)
        if match:
            cell = agg.cell(variant, key)
            if cell.present:
                points.append((int(match.group(1)), cell.mean, cell.std or 0.0))
    points.sort()
    return [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]


def _line_figure(agg: Aggregate, pattern: str, xlabel: str, ylabel: str, title: str,
                 variants: list[str] | None = None) -> Any | None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = 0
    for i, variant in enumerate(variants if variants is not None else agg.variants):
        x, y, err = _curve(agg, variant, pattern)
        if len(x) >= 1:
            ax.errorbar(x, y, yerr=err if any(err) else None, ms=4, capsize=2, label=variant, **_style(i))
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_title(title, fontsize=10)
    _finish(ax, xlabel, ylabel)
    return fig


def fig5(agg: Aggregate) -> Any | None:
    return _line_figure(agg, r"coherence/uncond/atleast_(\d+)", "number of coherent modalities (at least k agree)",
                        "share of unconditional samples", "Fig. 5: unconditional coherence")


def fig8(agg: Aggregate) -> Any | None:
    return _line_figure(agg, r"fid/last_given/k(\d+)", "number of observed modalities",
                        "FID of the last modality", "Fig. 8: conditional FID of the last modality given the first k")


def fig9(agg: Aggregate) -> Any | None:
    return _line_figure(agg, r"coherence/last_given/k(\d+)", "number of observed modalities",
                        "coherence of the last modality", "Fig. 9: coherence of the last modality given the first k")


def fig11(agg: Aggregate) -> Any | None:
    ten = [v for v in agg.variants if agg.collected.num_modalities(v) == agg.collected.suite.dataset.num_modalities]
    return _line_figure(agg, r"coherence/last_given/k(\d+)", "number of observed modalities",
                        "coherence of the last modality", "Fig. 11: guidance and sampler steps", ten)


def fig13(agg: Aggregate) -> Any | None:
    return _line_figure(agg, r"coherence/first_given/k(\d+)", "number of observed modalities",
                        "coherence of the first modality", "Fig. 13: coherence of the first modality given k others")


# ------------------------------------------------------------------------------------------- scaling


def _by_modalities(agg: Aggregate, key: str) -> dict[str, tuple[list[int], list[float], list[float]]]:
    """model -> (number of trained modalities, mean, std) for one key (scaling suites)."""
    out: dict[str, list[tuple[int, float, float]]] = {}
    for variant in agg.variants:
        cell = agg.cell(variant, key)
        if cell.present:
            out.setdefault(agg.collected.model_of(variant), []).append(
                (agg.collected.num_modalities(variant), cell.mean, cell.std or 0.0))
    return {m: ([p[0] for p in sorted(v)], [p[1] for p in sorted(v)], [p[2] for p in sorted(v)]) for m, v in out.items()}


def _scaling_axes(ax: Any, series: dict[str, tuple[list[int], list[float], list[float]]], ylabel: str) -> None:
    for i, (model, (x, y, err)) in enumerate(series.items()):
        ax.errorbar(x, y, yerr=err if any(err) else None, ms=4, capsize=2, label=model, **_style(i))
    _finish(ax, "number of trained modalities", ylabel)


def fig6(agg: Aggregate) -> Any | None:
    series = _by_modalities(agg, "fid/uncond/mean")
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    _scaling_axes(ax, series, "average unconditional FID")
    ax.set_title("Fig. 6: unconditional FID vs number of trained modalities", fontsize=10)
    return fig


def fig7(agg: Aggregate) -> Any | None:
    fid, coherence = _by_modalities(agg, "fid/loo/m0"), _by_modalities(agg, "coherence/loo/m0")
    if not fid and not coherence:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4), layout="constrained")
    _scaling_axes(left, fid, "FID of m0 given the rest")
    _scaling_axes(right, coherence, "coherence of m0 given the rest")
    fig.suptitle("Fig. 7: (a) conditional FID and (b) coherence of the first modality given the rest", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------- bars


def _per_modality_bars(agg: Aggregate, prefix: str, ylabel: str, title: str) -> Any | None:
    import numpy as np

    modalities = agg.collected.suite.dataset.modalities
    variants = [v for v in agg.variants if any(agg.cell(v, f"{prefix}/{m}").present for m in modalities)]
    if not variants:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(7, len(modalities) * 1.0), 4))
    width = 0.8 / len(variants)
    x = np.arange(len(modalities))
    for i, variant in enumerate(variants):
        cells = [agg.cell(variant, f"{prefix}/{m}") for m in modalities]
        means = [c.mean if c.present else np.nan for c in cells]
        errs = [c.std or 0.0 for c in cells]
        ax.bar(x + i * width - 0.4 + width / 2, means, width, yerr=errs if any(errs) else None, label=variant,
               color=_style(i)["color"])
    ax.set_xticks(x, [m.replace("m", "", 1) if m.startswith("m") else m for m in modalities])
    ax.set_title(title, fontsize=10)
    _finish(ax, "modality", ylabel, integer_x=False)
    return fig


def fig14(agg: Aggregate) -> Any | None:
    return _per_modality_bars(agg, "coherence/loo", "coherence given the rest", "Fig. 14: coherence of each modality given the rest")


def fig15(agg: Aggregate) -> Any | None:
    return _per_modality_bars(agg, "fid/loo", "FID given the rest", "Fig. 15: conditional FID of each modality given the rest")


# ------------------------------------------------------------------------------------- mode coverage


def coverage_shares(counts_csv: str) -> list[float]:
    """Class shares of unconditional samples pooled over modalities, from ``mode_coverage_counts.csv``."""
    rows = list(csv.DictReader(io.StringIO(counts_csv)))
    classes = [c for c in (rows[0].keys() if rows else []) if c.startswith("class_")]
    totals = [sum(float(r[c]) for r in rows) for c in classes]
    grand = sum(totals)
    return [t / grand for t in totals] if grand else []


def fig20(agg: Aggregate, coverage: dict[str, list[float]]) -> Any | None:
    if not coverage:
        return None
    plt = _pyplot()
    n = len(coverage)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
    for ax, (variant, shares) in zip(axes.flat, coverage.items(), strict=False):
        ax.bar(range(len(shares)), shares, color="tab:blue")
        ax.axhline(1.0 / len(shares), color="black", ls="--", lw=0.8)
        ax.set_title(variant, fontsize=9)
        ax.set_xticks(range(len(shares)))
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Fig. 20: mode coverage (classifier labels of unconditional samples; dashed: uniform)", fontsize=10)
    fig.tight_layout()
    return fig


FIGURES: dict[str, tuple[str, Callable[[Aggregate], Any | None]]] = {
    "fig5": ("Unconditional coherence: share of samples with at least k agreeing modalities", fig5),
    "fig6": ("Unconditional FID vs number of trained modalities", fig6),
    "fig7": ("Conditional FID and coherence of the first modality vs number of trained modalities", fig7),
    "fig8": ("Conditional FID of the last modality given the first k", fig8),
    "fig9": ("Coherence of the last modality given the first k", fig9),
    "fig11": ("Guidance and sampler steps: coherence of the last modality given the first k", fig11),
    "fig13": ("Coherence of the first modality given k others", fig13),
    "fig14": ("Coherence of each modality given the rest", fig14),
    "fig15": ("Conditional FID of each modality given the rest", fig15),
}


def budget_label(agg: Aggregate) -> str:
    """``budget smoke (pipeline check, ranks nothing)``: what every figure's title says about its budget."""
    budget = agg.collected.budget
    return f"budget {budget.name}" + ("" if budget.ranks else " (pipeline check, ranks nothing)")


def _stamp(fig: Any, label: str) -> Any:
    """Append the budget to the figure's title (its suptitle when it has one, else the first axes' title)."""
    if fig.get_suptitle():
        fig.suptitle(f"{fig.get_suptitle()} — {label}", fontsize=10)
    else:
        ax = fig.axes[0]
        ax.set_title(f"{ax.get_title()} — {label}", fontsize=10)
    return fig


def draw(name: str, agg: Aggregate, folder: Path) -> FigureResult:
    """Draw one of :data:`FIGURES` into ``folder`` (PNG and PDF), or say why it could not be drawn."""
    what, fn = FIGURES[name]
    fig = fn(agg)
    if fig is None:
        return FigureResult(name, [], f"the runs hold no values for it ({what})")
    return FigureResult(name, _save(_stamp(fig, budget_label(agg)), folder, name))


def draw_coverage(agg: Aggregate, coverage: dict[str, list[float]], folder: Path) -> FigureResult:
    fig = fig20(agg, coverage)
    if fig is None:
        return FigureResult("fig20", [], "no run logged mode_coverage_counts.csv")
    return FigureResult("fig20", _save(_stamp(fig, budget_label(agg)), folder, "fig20"))


# ---------------------------------------------------------------------------------------- sample grids


def grid_row_labels(kind: str, modalities: list[str]) -> list[str]:
    """The rows of a grid the evaluation wrote (``mmbench.metrics.pipeline._grids``): for ``loo``, per image
    modality the given test images then the ones generated from the other modalities; for ``uncond``, one
    row of unconditional samples per image modality."""
    if kind == "loo":
        return [label for m in modalities for label in (f"{m}: test data", f"{m}: generated | rest")]
    if kind == "uncond":
        return [f"{m}: generated" for m in modalities]
    raise ValueError(f"unknown sample grid kind {kind!r}; use loo or uncond")


def labelled_grid(png: bytes, row_labels: list[str], title: str, pad: int = 2) -> bytes:
    """The grid PNG redrawn with a title and, when its height fits ``len(row_labels)`` equal rows with
    ``pad`` pixels between them, each row's label on the left (else the title says rows are unlabelled)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    rows = len(row_labels)
    fits = rows > 0 and (height - pad) % rows == 0 and (height - pad) // rows > pad
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, width / 40 + 2.0), max(2.0, height / 40 + 0.8)))
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    if fits:
        step = (height - pad) / rows
        ax.set_yticks([pad + step * (i + 0.5) - pad / 2 for i in range(rows)], row_labels, fontsize=8)
    else:
        ax.set_yticks([])
        title += " (rows unlabelled: the grid's size does not match its modalities)"
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=150)
    plt.close(fig)
    return buffer.getvalue()
