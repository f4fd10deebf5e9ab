"""Time of each output writer on one real result, and the whole ``write_case_outputs``.

Run: ``python benchmarks/writer_times.py CT [--model BUNDLE] [--fast] [--threads 1]
[--repeats 3]``. Segments ``CT`` once in this process (stage times from the report), then times
every writer of ``outputs.py`` on that result into a temporary folder: median seconds over
``--repeats`` and the file's size. ``--compression-levels 1 6 9`` also times the NIfTI volumes
written by SimpleITK at those gzip levels (evidence for the writers' choice).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
import torch


def timed(write, path: Path, repeats: int) -> dict:
    seconds = []
    for _ in range(repeats):
        path.unlink(missing_ok=True)
        start = time.perf_counter()
        write(path)
        seconds.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(seconds), 3),
            "mb": round(path.stat().st_size / 1e6, 3)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ct", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compression-levels", type=int, nargs="*", default=[])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from pancreas_ssl_seg import outputs, seg_nrrd, segment

    start = time.perf_counter()
    result = segment(str(args.ct), model=args.model, device="cpu", fast=args.fast)
    figures = {"segment_s": round(time.perf_counter() - start, 2),
               "timings_s": {k: round(v, 2) for k, v in result.report["timings_s"].items()},
               "writers": {}}
    volumes = {"labels": (result.labels, sitk.sitkUInt8),
               "uncertainty": (result.uncertainty, sitk.sitkFloat32),
               "regions": (result.regions, sitk.sitkInt32)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        writers = {f"{key}.nii.gz": (lambda path, a=array, t=pixel: outputs._write_volume(
                       result, a, t, path)) for key, (array, pixel) in volumes.items()}
        writers["segmentation.seg.nrrd"] = lambda path: seg_nrrd.write_seg_nrrd(result, path)
        writers["preview.png"] = lambda path: outputs._write_preview(result, path)
        writers["report.json"] = lambda path: outputs._write_report(result.report, path)
        for name, write in writers.items():
            figures["writers"][name] = timed(write, out / name, args.repeats)
        for level in args.compression_levels:
            for key, (array, pixel) in volumes.items():
                image = sitk.Cast(result.to_sitk(array), pixel)
                figures["writers"][f"{key}.nii.gz level {level}"] = timed(
                    lambda path, i=image, lv=level: sitk.WriteImage(i, str(path), True, lv),
                    out / f"{key}-{level}.nii.gz", args.repeats)
        seconds = []
        for index in range(args.repeats):
            start = time.perf_counter()
            outputs.write_case_outputs(result, out / f"case{index}", "case")
            seconds.append(time.perf_counter() - start)
        figures["write_case_outputs_median_s"] = round(statistics.median(seconds), 2)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
