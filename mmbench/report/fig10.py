"""Fig. 10 of Wesego & Rooshenas 2024 (CelebAMask-HQ): unconditional joint samples of each model, one joint
draw per column, its image, its mask and its attributes (the names of those above 0.5) in rows.

Reads the evaluation artifact ``samples_uncond_joint.npz`` (``mmbench.metrics.pipeline``: arrays
``modality__<name>`` of uint8 samples, ``kinds`` as ``name=kind`` strings, ``attribute_names`` where the
data records them) of each row's first run; a row without one is left out and the report says so.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.report.figures import FigureResult, _pyplot, _save

ARTIFACT = "samples_uncond_joint.npz"
WHAT = "Unconditional joint samples: image, mask and attributes of one draw per column (paper Fig. 10)"
MAX_NAMES = 6  # attribute names written under one sample (the rest counted)


@dataclass(frozen=True)
class JointSamples:
    """One model's joint draws: ``{modality: uint8 (n, C, H, W)}``, ``{modality: kind}``, attribute names."""

    arrays: dict[str, np.ndarray]
    kinds: dict[str, str]
    attribute_names: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return min(len(a) for a in self.arrays.values())


def read_joint(data: bytes) -> JointSamples:
    """The joint samples stored by an evaluation (bytes of ``samples_uncond_joint.npz``)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        arrays = {k.removeprefix("modality__"): stored[k] for k in stored.files if k.startswith("modality__")}
        kinds = dict(str(x).split("=", 1) for x in stored["kinds"]) if "kinds" in stored.files else {}
        names = tuple(str(x) for x in stored["attribute_names"]) if "attribute_names" in stored.files else ()
    if not arrays:
        raise ValueError(f"{ARTIFACT} holds no modality__<name> arrays; regenerate it with mmbench eval")
    return JointSamples(arrays, {m: kinds.get(m, "image") for m in arrays}, names)


def attribute_text(values: np.ndarray, names: tuple[str, ...]) -> str:
    """The attributes present (value above 0.5 of 255) in one uint8 ``(L, 1, 1)`` sample, one per line."""
    on = [i for i, v in enumerate(np.asarray(values).reshape(-1)) if v > 127]
    labels = [names[i] if i < len(names) else f"a{i}" for i in on]
    if len(labels) > MAX_NAMES:
        labels = labels[:MAX_NAMES] + [f"+{len(labels) - MAX_NAMES} more"]
    return "\n".join(labels) or "(none)"


def _show(ax: Any, item: np.ndarray) -> None:
    picture = np.transpose(np.asarray(item), (1, 2, 0))
    if picture.shape[2] == 1:
        ax.imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(picture, interpolation="nearest")


def figure(samples: Mapping[str, JointSamples], columns: int = 8) -> Any:
    """Per model, one row per modality (images and masks drawn, attributes written), ``columns`` draws."""
    plt = _pyplot()
    rows = [(model, m) for model, s in samples.items() for m in s.arrays]
    cols = min(columns, max(s.n for s in samples.values()))
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.3 * cols + 1.2, 1.3 * len(rows)), squeeze=False)
    for r, (model, m) in enumerate(rows):
        joint = samples[model]
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < joint.n and joint.kinds[m] == "attributes":
                ax.text(0.5, 0.5, attribute_text(joint.arrays[m][c], joint.attribute_names), ha="center",
                        va="center", fontsize=5, transform=ax.transAxes)
            elif c < joint.n:
                _show(ax, joint.arrays[m][c])
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(f"{model}\n{m}", fontsize=7)
    fig.suptitle("Fig. 10: " + WHAT, fontsize=10)
    fig.tight_layout()
    return fig


def draw(samples: Mapping[str, JointSamples], folder: Path, label: str) -> FigureResult:
    """``fig10.{png,pdf}`` in ``folder``, or why it could not be drawn. ``label``: the budget line."""
    if not samples:
        return FigureResult("fig10", [], f"no run logged {ARTIFACT} (unconditional samples of celeba data)")
    fig = figure(samples)
    fig.suptitle(f"{fig.get_suptitle()} — {label}", fontsize=10)
    return FigureResult("fig10", _save(fig, folder, "fig10"))
