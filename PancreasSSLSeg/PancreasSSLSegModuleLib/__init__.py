"""The Slicer module's own logic pieces, one job per file; no Qt here.

``engine_process`` runs the engine CLI in the background; ``volume_io`` moves volumes between MRML
and SimpleITK; ``scene_results`` turns engine outputs into MRML nodes; ``review`` edits the
uncertain regions; ``corrections_export`` saves corrected cases for training; ``dependencies``
checks and (with consent) installs the engine's Python packages.
"""
