"""Are two runs' outputs the same? Compares every case of two output trees, file by file.

Run: ``python benchmarks/compare_outputs.py BEFORE AFTER``: each holds one folder per run (e.g.
``clinical_fast/``), as written by ``pancreas-ssl-seg segment -o``. Compared: the NIfTI volumes'
voxels, voxel type and geometry; the seg.nrrd voxels and header (but its date); the preview PNG's
pixels; every report field but ``timings_s``, ``peak_memory_mb`` and ``outputs`` (checksums of
files whose compression may change). Exit status 0 when everything is identical. Used for the
"same results" check of each speed change (benchmarks/NOTES.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nrrd
import numpy as np
import SimpleITK as sitk
from PIL import Image

REPORT_FIELDS_IGNORED = ("timings_s", "peak_memory_mb", "outputs")


def same_file(a: Path, b: Path) -> bool:
    if a.name.endswith(".nii.gz"):
        ia, ib = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
        return (np.array_equal(sitk.GetArrayViewFromImage(ia), sitk.GetArrayViewFromImage(ib))
                and ia.GetPixelID() == ib.GetPixelID() and ia.GetOrigin() == ib.GetOrigin()
                and ia.GetSpacing() == ib.GetSpacing() and ia.GetDirection() == ib.GetDirection())
    if a.name.endswith(".seg.nrrd"):
        (va, ha), (vb, hb) = nrrd.read(str(a)), nrrd.read(str(b))
        ha, hb = ({k: v for k, v in h.items() if "date" not in k.lower()} for h in (ha, hb))
        return np.array_equal(va, vb) and (json.dumps(ha, default=str)
                                           == json.dumps(hb, default=str))
    if a.name.endswith(".png"):
        return np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    if a.name.endswith("_report.json"):
        ra, rb = (json.loads(p.read_text(encoding="utf-8")) for p in (a, b))
        for report in (ra, rb):
            for key in REPORT_FIELDS_IGNORED:
                report.pop(key, None)
        return ra == rb
    return a.read_bytes() == b.read_bytes()


def main(argv=None) -> int:
    before, after = (Path(p) for p in (argv or sys.argv[1:]))
    identical = True
    for run in sorted(p for p in before.iterdir() if p.is_dir()):
        for a in sorted(p for p in run.iterdir() if p.is_file()):
            b = after / run.name / a.name
            same = b.is_file() and same_file(a, b)
            identical &= same
            print(f"{'same' if same else 'DIFFERENT'} {run.name}/{a.name}")
    print("ALL IDENTICAL" if identical else "DIFFERENCES FOUND")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
