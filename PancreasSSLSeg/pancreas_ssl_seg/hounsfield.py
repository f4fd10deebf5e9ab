"""Hounsfield values the engine and training share: the one place each is written.

Two values are close but mean different things:

- :data:`AIR_HU` (-1000) is physical air, what a scan measures in air; the checks that ask "is
  this a CT in HU?" (``ct_plausibility``) compare against it.
- :data:`OUTSIDE_SCAN_HU` (-1024) is the value given to voxels that hold no measurement: outside
  the scan when resampling or padding, non-finite voxels of an input, unrecoverable dark pixels
  outside the body of 8-bit slices. It is air as CT files store it (stored 0 with the usual
  rescale intercept -1024), so filled voxels look like the scan's own air to the networks.
"""

AIR_HU = -1000.0
OUTSIDE_SCAN_HU = -1024.0
# Soft tissue (fat excluded, contrast-enhanced organs included): where the intensity reference of
# ``preprocessing.normalize_ct`` is measured; DEFAULT_REFERENCE_HU when a scan has too little.
SOFT_TISSUE_HU = (-100.0, 200.0)
DEFAULT_REFERENCE_HU = 40.0
# The intensity window training uses unless its config says otherwise; a bundle records its own
# (``metadata["intensity"]["hu_window"]``), which is what inference reads.
DEFAULT_HU_WINDOW = (-200.0, 300.0)
# Plausibility (``ct_plausibility.check_ct_intensities``): no tissue is brighter than dense
# bone/enamel (about 3000 HU; scanners store at most 3071 unless extended-range), and no CT voxel
# in HU is darker than this (air is -1000 HU, its noise reaches about -1100).
MAX_TISSUE_HU = 4000.0
MIN_CT_HU = -2000.0
