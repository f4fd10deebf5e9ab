"""PancreasSSLSeg engine: CT in; pancreas and lesion labels, uncertainty and a report out.

Importable without 3D Slicer. Entry point: :func:`segment`.
"""

__version__ = "0.1.0"
