"""The compute devices a run may ask for: one spelling for the CLI's ``--device``, the Slicer
module's device list, ``segment(device=...)`` and training's evaluation.

``auto`` is CUDA when a GPU is present, else CPU (``inference.select_device``). Standard library
only, so the module and the CLI's parser can read it before torch is imported or installed.
"""

DEVICE_CHOICES = ("auto", "cpu", "cuda")
