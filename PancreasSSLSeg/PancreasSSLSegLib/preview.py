"""A one-glance PNG of a result: three axial slices through the pancreas and one coronal slice.

CT in a soft-tissue window (W 400 / L 40), label contours in the bundle's colours, uncertainty as
a translucent heat overlay, a legend, and a title with the volumes. Slices are shown in the
canonical LPS orientation (radiological display: patient right on the left, anterior at the top).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed (CLI, servers)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .preprocessing import to_canonical  # noqa: E402

SOFT_TISSUE_WINDOW_HU = (-160.0, 240.0)
UNCERTAINTY_SHOWN_FROM = 0.05  # lighter uncertainty would only tint the whole box


def _canonical_array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(to_canonical(image))


def _axial_indices(labels: np.ndarray) -> list[int]:
    """Three slices at 25/50/75 % of the pancreas' z extent (of the scan when nothing found)."""
    z = np.flatnonzero(labels.any(axis=(1, 2)))
    lo, hi = (z[0], z[-1]) if z.size else (0, labels.shape[0] - 1)
    return [int(round(lo + f * (hi - lo))) for f in (0.25, 0.5, 0.75)]


def _coronal_index(labels: np.ndarray) -> int:
    y = np.flatnonzero(labels.any(axis=(0, 2)))
    return int(np.median(y)) if y.size else labels.shape[1] // 2


def _draw(ax, ct, labels, uncertainty, colours, aspect, origin, title):
    ax.imshow(ct, cmap="gray", vmin=SOFT_TISSUE_WINDOW_HU[0], vmax=SOFT_TISSUE_WINDOW_HU[1],
              aspect=aspect, origin=origin, interpolation="bilinear")
    heat = np.ma.masked_less(uncertainty, UNCERTAINTY_SHOWN_FROM)
    ax.imshow(heat, cmap="inferno", vmin=0.0, vmax=1.0, alpha=0.45, aspect=aspect, origin=origin)
    # Contours in data coordinates (row i at y = i), where imshow has put row i for either origin.
    # contour's own ``origin="upper"`` flips the rows again: the outlines came out upside down.
    rows, cols = np.mgrid[0:labels.shape[0], 0:labels.shape[1]]
    for value, colour in colours.items():
        mask = labels == value
        if mask.any():
            ax.contour(cols, rows, mask.astype(np.uint8), levels=[0.5], colors=[colour],
                       linewidths=1.2)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def write_preview(result, path: str | Path) -> None:
    """Write the preview PNG of a ``SegmentationResult`` to ``path``."""
    report = result.report
    ct = _canonical_array(result.image)
    labels = _canonical_array(result.to_sitk(result.labels))
    uncertainty = _canonical_array(result.to_sitk(result.uncertainty))
    spacing_x, spacing_y, spacing_z = to_canonical(result.image).GetSpacing()
    colours = {int(entry["value"]): np.array(entry["color"]) / 255.0
               for entry in report["segments"] if int(entry["value"]) > 0}

    if ct.shape[0] == 1:  # one axial slice (2-D input): that slice alone
        fig, axes = plt.subplots(1, 1, figsize=(6, 5.6), facecolor="black", squeeze=False)
        axes = axes[0]
        _draw(axes[0], ct[0], labels[0], uncertainty[0], colours, spacing_y / spacing_x,
              "upper", "axial slice")
    else:
        fig, axes = plt.subplots(1, 4, figsize=(16, 4.6), facecolor="black")
        for ax, z in zip(axes[:3], _axial_indices(labels)):
            _draw(ax, ct[z], labels[z], uncertainty[z], colours, spacing_y / spacing_x, "upper",
                  f"axial slice {z}")
        y = _coronal_index(labels)
        _draw(axes[3], ct[:, y, :], labels[:, y, :], uncertainty[:, y, :], colours,
              spacing_z / spacing_x, "lower", f"coronal row {y}")
    for ax in axes:
        ax.title.set_color("white")

    handles = [Patch(facecolor="none", edgecolor=colours[int(e["value"])], label=e["name"])
               for e in report["segments"] if int(e["value"]) in colours]
    handles.append(Patch(color=plt.get_cmap("inferno")(0.8), alpha=0.6, label="uncertainty"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
               labelcolor="white", fontsize=9)
    pancreas, lesions = report["pancreas"], report["lesions"]
    if pancreas["found"]:
        title = (f"Pancreas {pancreas['volume_ml']:.1f} mL  |  lesions: {lesions['count']}, "
                 f"{lesions['total_volume_ml']:.1f} mL")
    else:
        title = "No pancreas found"
    fig.suptitle(f"{title}  |  model {report['model']['name']} {report['model']['version']}",
                 color="white", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.93))
    fig.savefig(path, dpi=90, facecolor=fig.get_facecolor())
    plt.close(fig)
