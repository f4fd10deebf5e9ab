"""The baseline: an nnU-Net-sized 3-D U-Net run full-resolution by sliding window (random weights).

MONAI ``DynUNet`` with filters 32-320 (nnU-Net's 3-D full-resolution plan for a 128^3 patch),
``SlidingWindowInferer`` with overlap 0.5 and Gaussian blending, no test-time augmentation, over
the whole abdomen resampled to 1.5 mm. Running every patch takes tens of minutes here, so this
step runs an untimed warm-up on a tiny input, then times ``patches`` patches of a crop through the
same inferer and extrapolates to the full patch count; reading, resampling, arg-max, resampling
back and writing the label map are measured on the full volume.

Run as a script (one benchmark step, one process): ``python baseline.py CT.nii.gz OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import DynUNet

from pancreas_ssl_seg.hounsfield import DEFAULT_HU_WINDOW, DEFAULT_REFERENCE_HU
from pancreas_ssl_seg.preprocessing import normalize_ct, resample_to_spacing

BASELINE_SPACING_MM = (1.5, 1.5, 1.5)
PATCH_SIZE = (128, 128, 128)
OVERLAP = 0.5
FILTERS = [32, 64, 128, 256, 320, 320]


def build_baseline_network(out_channels: int = 3) -> DynUNet:
    """nnU-Net-sized DynUNet for a 128^3 patch: 6 levels, 5 down-samplings by 2."""
    strides = [[1, 1, 1]] + [[2, 2, 2]] * (len(FILTERS) - 1)
    return DynUNet(spatial_dims=3, in_channels=1, out_channels=out_channels,
                   kernel_size=[[3, 3, 3]] * len(FILTERS), strides=strides,
                   upsample_kernel_size=strides[1:], filters=FILTERS, norm_name="instance",
                   deep_supervision=False, res_block=False)


def sliding_window_patch_count(image_size, patch_size=PATCH_SIZE, overlap=OVERLAP) -> int:
    """How many patches MONAI's sliding window visits on ``image_size`` (array order)."""
    size = [max(i, p) for i, p in zip(image_size, patch_size)]  # MONAI pads up to the patch
    interval = [int(p * (1 - overlap)) if i > p else p for i, p in zip(size, patch_size)]
    return len(dense_patch_slices(size, patch_size, interval))


def make_inferer() -> SlidingWindowInferer:
    return SlidingWindowInferer(roi_size=PATCH_SIZE, sw_batch_size=1, overlap=OVERLAP,
                                mode="gaussian")


def crop_with_patches(volume: np.ndarray, patches: int) -> np.ndarray:
    """A centred crop the inferer covers with exactly ``patches`` patches along z."""
    step = int(PATCH_SIZE[0] * (1 - OVERLAP))
    depth = PATCH_SIZE[0] + step * (patches - 1)
    padded = np.pad(volume, [(0, max(0, n - s)) for n, s in
                             zip((depth, *PATCH_SIZE[1:]), volume.shape)], constant_values=0.0)
    starts = [(s - n) // 2 for s, n in zip(padded.shape, (depth, *PATCH_SIZE[1:]))]
    return padded[tuple(slice(a, a + n) for a, n in zip(starts, (depth, *PATCH_SIZE[1:])))]


def run(ct_path: Path, patches: int) -> dict:
    timings_s: dict[str, float] = {}
    t0 = time.perf_counter()
    image = sitk.ReadImage(str(ct_path))
    timings_s["read"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    resampled = resample_to_spacing(sitk.Cast(image, sitk.sitkFloat32), BASELINE_SPACING_MM)
    hu = sitk.GetArrayFromImage(resampled)
    normalised = normalize_ct(hu, DEFAULT_HU_WINDOW, DEFAULT_REFERENCE_HU)
    timings_s["resample_and_normalise"] = time.perf_counter() - t0

    network = build_baseline_network().eval()
    inferer = make_inferer()
    full_patches = sliding_window_patch_count(normalised.shape)
    crop = torch.from_numpy(np.ascontiguousarray(crop_with_patches(normalised, patches)))
    crop = crop[None, None]
    with torch.inference_mode():
        network(torch.zeros(1, 1, 64, 64, 64))  # warm-up: one-off set-up costs, untimed
        t0 = time.perf_counter()
        inferer(crop, network)
        measured_s = time.perf_counter() - t0
    per_patch_s = measured_s / patches
    timings_s["sliding_window_extrapolated"] = per_patch_s * full_patches

    # Post-processing on the full grid with a stand-in label map (random weights mean nothing).
    t0 = time.perf_counter()
    logits = np.zeros((3, *normalised.shape), np.float32)
    labels = sitk.GetImageFromArray(logits.argmax(0).astype(np.uint8))
    labels.CopyInformation(resampled)
    back = sitk.Resample(labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    with tempfile.TemporaryDirectory() as tmp:
        sitk.WriteImage(back, str(Path(tmp) / "labels.nii.gz"), useCompression=True)
    timings_s["argmax_resample_back_write"] = time.perf_counter() - t0

    return {"network": "MONAI DynUNet", "filters": FILTERS, "patch_size": list(PATCH_SIZE),
            "overlap": OVERLAP, "blend": "gaussian", "spacing_mm": list(BASELINE_SPACING_MM),
            "grid_zyx": list(normalised.shape), "full_patch_count": full_patches,
            "measured_patches": patches, "measured_patches_s": measured_s,
            "per_patch_s": per_patch_s, "timings_s": timings_s,
            "total_s_extrapolated": sum(timings_s.values()),
            "parameters_million": sum(p.numel() for p in network.parameters()) / 1e6,
            "torch_threads": torch.get_num_threads()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ct", type=Path)
    parser.add_argument("out_json", type=Path)
    parser.add_argument("--patches", type=int, default=1, help="patches timed")
    args = parser.parse_args(argv)
    result = run(args.ct, args.patches)
    args.out_json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
