"""How a result is shown to people, the same in the preview PNG (``preview.py``) and the Slicer
panel (``PancreasSSLSegLib``): the quality verdict's statuses and their banner colours, the
uncertainty below which an overlay is transparent, and the CT display window of the pictures.
Standard library only, so the Slicer module and the batch summary read it without matplotlib,
scipy or torch.
"""

# The statuses ``quality.verdict`` gives, best first: score >= ok_score "ok", >= check_score
# "check", below "failed".
QUALITY_STATUSES = ("ok", "check", "failed")
# Verdict banner colours (RGB 0-255), chosen apart from the label colours, and the text colour
# on each; grey for a report without a verdict (an engine older than the verdict).
STATUS_COLOURS = {"ok": (30, 150, 60), "check": (255, 176, 0), "failed": (204, 0, 0)}
STATUS_TEXT_COLOURS = {"ok": "white", "check": "black", "failed": "white"}
NO_VERDICT_COLOUR = (110, 110, 110)
# Uncertainty overlays are transparent below this: lighter uncertainty would only tint the
# whole box and hide the CT.
UNCERTAINTY_SHOWN_FROM = 0.05
# CT pictures (the preview, training's figures) in the abdominal soft-tissue window W 400 / L 40.
SOFT_TISSUE_WINDOW_HU = (-160.0, 240.0)
