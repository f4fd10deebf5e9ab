"""The quality verdict banner at the top of the results: status, score and reasons of the engine's
report (``report["quality"]``), in the status colour.

Plain data (no Qt): the Widget puts ``text`` (rich text) and ``style_sheet`` on its QLabel. The
colours are the preview's (``pancreas_ssl_seg.display``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from pancreas_ssl_seg.display import NO_VERDICT_COLOUR, STATUS_COLOURS, STATUS_TEXT_COLOURS

ADVICE = {"ok": "nothing suggests a failure",
          "check": "look at the reasons and the ranked regions",
          "failed": "treat the result as wrong"}


@dataclass(frozen=True)
class Banner:
    status: str | None  # ok / check / failed; None: the report has no verdict
    score: float | None
    reasons: tuple[str, ...]
    background_rgb: tuple[int, int, int]
    text_colour: str
    text: str  # rich text for a QLabel
    style_sheet: str


def verdict_banner(report: dict | None) -> Banner | None:
    """The banner of ``report``; None without a report (nothing segmented yet)."""
    if report is None:
        return None
    quality = report.get("quality") or {}
    status = quality.get("status")
    if status not in STATUS_COLOURS:
        status = None
    score = None if quality.get("score") is None else float(quality["score"])
    reasons = tuple(str(reason) for reason in quality.get("reasons") or [])
    background = STATUS_COLOURS.get(status, NO_VERDICT_COLOUR)
    text_colour = STATUS_TEXT_COLOURS.get(status, "white")
    if status is None:
        headline = "Quality: no verdict"
        lines = ["This report has no quality verdict (an engine older than the verdict)."]
    else:
        headline = f"Quality: {status.upper()} · score {score:.2f}"
        lines = [f"{ADVICE[status]}:" if reasons else ADVICE[status]] + [
            f"• {reason}" for reason in reasons]
    text = (f"<b style='font-size:13pt'>{html.escape(headline)}</b><br>"
            + "<br>".join(html.escape(line) for line in lines))
    style = (f"QLabel {{ background-color: rgb{background}; color: {text_colour}; "
             "padding: 6px; border-radius: 4px; }")
    return Banner(status, score, reasons, background, text_colour, text, style)
