"""A one-glance PNG of a result: three axial slices through the pancreas and one coronal slice.

CT in a soft-tissue window (W 400 / L 40), label contours in the bundle's colours, uncertainty as
a translucent heat overlay, a legend, a title with the volumes and, above everything, the quality
verdict as a banner the width of the picture in its status colour (``display.STATUS_COLOURS``: ok
green, check amber, failed red) with the score and the reasons, shortened and wrapped. Slices are
shown in the canonical LPS orientation (radiological display: patient right on the left,
anterior at the top).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed (CLI, servers)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from .display import (NO_VERDICT_COLOUR, SOFT_TISSUE_WINDOW_HU, STATUS_COLOURS,  # noqa: E402
                      STATUS_TEXT_COLOURS, UNCERTAINTY_SHOWN_FROM)
from .preprocessing import to_canonical  # noqa: E402

BANNER_HEIGHT_IN = 0.75
HEADLINE_IN = 3.6  # "Quality: FAILED · score 0.00" at 13 pt bold fits; the reasons start there
REASON_CHARS = 90  # each reason shortened to this many characters
REASON_LINES = 2  # the reasons wrapped onto at most this many lines


def _canonical_view(image: sitk.Image):
    """``(view, spacing)``: a function turning a (z, y, x) array on ``image``'s grid into a
    view of it in the canonical LPS orientation (no copy), and the canonical (x, y, z) spacing.

    The preview draws four slices; reorienting whole volumes to find them (``to_canonical`` of
    the CT, labels and uncertainty) copied ~800 MB and took ~0.8 s on a 512x512x224 CT
    (benchmarks/NOTES.md). Reorienting is a permutation and flips of the axes, decided by the
    direction alone: ``to_canonical`` reorients a 2x3x4 probe of index values with ``image``'s
    direction, and the probe says which input axis, flipped or not, each canonical axis is."""
    shape = (4, 3, 2)  # (z, y, x): distinct sizes, so each axis is known by its size
    probe = sitk.GetImageFromArray(np.arange(np.prod(shape), dtype=np.int32).reshape(shape))
    probe.SetDirection(image.GetDirection())
    probe.SetSpacing(image.GetSpacing())
    oriented = to_canonical(probe)
    expected = sitk.GetArrayFromImage(oriented)
    order = tuple(shape.index(n) for n in expected.shape)
    first = np.unravel_index(int(expected[0, 0, 0]), shape)
    flips = tuple(slice(None, None, -1) if first[axis] else slice(None) for axis in order)

    def view(array: np.ndarray) -> np.ndarray:
        return np.asarray(array).transpose(order)[flips]

    if not np.array_equal(view(sitk.GetArrayViewFromImage(probe)), expected):
        raise AssertionError("canonical reorientation is not an axis permutation and flips")
    return view, oriented.GetSpacing()


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


def verdict_lines(quality: dict | None, width_chars: int) -> tuple[str, list[str]]:
    """(headline, reason lines) of the banner: ``"Quality: CHECK · score 0.42"`` and the
    reasons, each shortened to :data:`REASON_CHARS`, joined by "; " and wrapped to
    ``width_chars`` on at most :data:`REASON_LINES` lines (an ellipsis ends the last when there
    was more)."""
    if not quality:
        return "NO QUALITY VERDICT", ["this report has no quality verdict (older engine)"]
    headline = f"Quality: {str(quality['status']).upper()} · score {float(quality['score']):.2f}"
    reasons = [textwrap.shorten(str(reason), REASON_CHARS, placeholder="…")
               for reason in quality.get("reasons") or []]
    if not reasons:
        return headline, ["no warning signs" if quality["status"] == "ok" else ""]
    lines = textwrap.wrap("; ".join(reasons), width_chars)
    if len(lines) > REASON_LINES:
        last = textwrap.shorten(lines[REASON_LINES - 1] + " " + lines[REASON_LINES], width_chars,
                                placeholder="…")
        lines = lines[:REASON_LINES - 1] + [last]
    return headline, lines


def _draw_banner(fig, quality: dict | None, height_fraction: float) -> None:
    """The verdict banner across the top ``height_fraction`` of ``fig``."""
    status = (quality or {}).get("status")
    colour = np.array(STATUS_COLOURS.get(status, NO_VERDICT_COLOUR)) / 255.0
    text_colour = STATUS_TEXT_COLOURS.get(status, "white")
    fig.patches.append(Rectangle((0, 1 - height_fraction), 1, height_fraction,
                                 transform=fig.transFigure, facecolor=colour, edgecolor="none",
                                 zorder=0))
    width_in = fig.get_size_inches()[0]
    headline, reasons = verdict_lines(quality, width_chars=int((width_in - HEADLINE_IN) * 12))
    middle = 1 - height_fraction / 2
    fig.text(0.012, middle, headline, color=text_colour, fontsize=13, fontweight="bold",
             va="center", ha="left")
    fig.text(HEADLINE_IN / width_in, middle, "\n".join(reasons), color=text_colour, fontsize=9,
             va="center", ha="left", linespacing=1.3)


def write_preview(result, path: str | Path) -> None:
    """Write the preview PNG of a ``SegmentationResult`` to ``path``."""
    report = result.report
    canonical, (spacing_x, spacing_y, spacing_z) = _canonical_view(result.image)
    # Views, not copies: only the slices drawn are read.
    ct = canonical(sitk.GetArrayViewFromImage(result.image))
    labels = canonical(result.labels)
    uncertainty = canonical(result.uncertainty)
    colours = {int(entry["value"]): np.array(entry["color"]) / 255.0
               for entry in report["segments"] if int(entry["value"]) > 0}

    if ct.shape[0] == 1:  # one axial slice (2-D input): that slice alone
        fig, axes = plt.subplots(1, 1, figsize=(7, 5.6 + BANNER_HEIGHT_IN), facecolor="black",
                                 squeeze=False)
        axes = axes[0]
        _draw(axes[0], ct[0], labels[0], uncertainty[0], colours, spacing_y / spacing_x,
              "upper", "axial slice")
    else:
        fig, axes = plt.subplots(1, 4, figsize=(16, 4.6 + BANNER_HEIGHT_IN), facecolor="black")
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
    banner = BANNER_HEIGHT_IN / fig.get_size_inches()[1]
    _draw_banner(fig, report.get("quality"), banner)
    fig.suptitle(f"{title}  |  model {report['model']['name']} {report['model']['version']}",
                 color="white", fontsize=11, y=1 - banner - 0.01, va="top")
    fig.tight_layout(rect=(0, 0.07, 1, 1 - banner - 0.07))
    fig.savefig(path, dpi=90, facecolor=fig.get_facecolor())
    plt.close(fig)
