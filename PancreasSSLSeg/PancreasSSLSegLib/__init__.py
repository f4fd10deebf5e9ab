"""The Slicer module's own code, one job per file (as SlicerNNUnet's ``...Lib``).

``logic`` (``PancreasSSLSegLogic``: every decision, no Qt; the console API), ``widget`` (the
panel: .ui widgets wired to the Logic), ``parameters`` (the run settings, their CLI options and
their parameter node), ``results`` (typed run state and outcomes), ``engine_process`` (the engine
CLI in the background: start, progress lines, cancel), ``batch`` (``segmentFiles``' reports and
summary), ``scene_results`` (the engine's files into MRML nodes), ``review`` (the uncertain
regions), ``verdict_banner``, ``corrections_export``, ``volume_io`` (MRML ↔ SimpleITK) and
``dependencies`` (the engine's packages, installed with consent).
"""
