"""Network inference for one cascade stage: device choice, ensemble members, flip TTA, MC dropout,
sliding window.

Every stage goes through MONAI's ``SlidingWindowInferer``. 3-D stages see the volume as
``(N, 1, z, y, x)`` with ``roi_size = patch_size``. 2-D stages see it as a batch of axial slices
``(N, 1, y, x)`` with one window per whole slice (``whole_slice_roi``): the networks are fully
convolutional, and four overlapping 128-pixel windows on a 136-pixel coarse slice computed 3.5x
the pixels of one window. The flipped copies of TTA are stacked into that batch, so every flip
shares one pass (2-D stages: in chunks of ``SLICES_PER_PASS`` slices, to bound memory).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from .bundle import ModelBundle
from .devices import DEVICE_CHOICES
from .errors import DeviceError
from .networks import size_divisor

# 2-D stages: slices per network call. Bounds activation memory (a fine box with flips holds
# hundreds of slices) while keeping batches large enough to be efficient.
SLICES_PER_PASS = 32
# 2-D stages: pixels per network call. On CPU the time per pixel grew with larger batches
# (1 thread, coarse network: 3.9 us/px at 4 x 136^2, 5.7 us/px at 16 x 136^2).
PIXELS_PER_CALL = 4 * 128 * 128


def select_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU → ``DeviceError``."""
    if name not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device {name!r}; expected one of {', '.join(DEVICE_CHOICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was requested but no CUDA GPU is available here")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _enable_mc_dropout(network: torch.nn.Module) -> None:
    """Dropout layers sample at inference (the rest, e.g. instance norm, stays in eval mode)."""
    for module in network.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.train()


def _flip_batch(volume: torch.Tensor, flips: Sequence[Sequence[int]]) -> torch.Tensor:
    """(z, y, x) → (T, z, y, x): one copy per flip (axes of the canonical array)."""
    return torch.stack([torch.flip(volume, dims=list(axes)) if axes else volume for axes in flips])


def whole_slice_roi(slice_shape: Sequence[int], patch_size: Sequence[int],
                    size_divisor: int) -> list[int]:
    """A window covering the whole slice: each side at least the patch, rounded up to the
    network's size divisor (the product of its strides)."""
    return [max(int(patch), -(-int(size) // size_divisor) * size_divisor)
            for size, patch in zip(slice_shape, patch_size)]


def predict_stage(bundle: ModelBundle, stage_name: str, volume: np.ndarray, device: torch.device,
                  flips: Sequence[Sequence[int]] = ((),), mc_dropout_samples: int = 0,
                  overlap: float = 0.25, members: int = 1) -> np.ndarray:
    """Mean softmax ``(C, z, y, x)`` float32 of one stage over its first ``members`` networks
    (an ensemble), TTA flips and MC dropout samples.

    ``volume`` is the normalised canonical array ``(z, y, x)``.
    """
    from monai.inferers import SlidingWindowInferer  # where it runs: see networks.py on MONAI

    stage = bundle.stage(stage_name)
    networks = [bundle.load_network(stage_name, device, member) for member in range(members)]
    if mc_dropout_samples > 0:
        for network in networks:
            _enable_mc_dropout(network)
    passes = max(1, mc_dropout_samples)
    roi_size, windows_per_call = list(stage.patch_size), 1
    if stage.spatial_dims == 2:
        roi_size = whole_slice_roi(volume.shape[1:], stage.patch_size,
                                   size_divisor(stage.network))
        windows_per_call = max(1, PIXELS_PER_CALL // int(np.prod(roi_size)))
    inferer = SlidingWindowInferer(roi_size=roi_size, sw_batch_size=windows_per_call,
                                   overlap=overlap, mode="gaussian")
    volume_t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)).to(device)
    batch = _flip_batch(volume_t, flips)                                   # (T, z, y, x)
    n_flips, depth = batch.shape[0], batch.shape[1]
    if stage.spatial_dims == 2:
        batch = batch.reshape(n_flips * depth, 1, *batch.shape[2:])       # axial slices
    else:
        batch = batch.unsqueeze(1)
    mean_probs = None
    with torch.inference_mode(), torch.autocast(device.type, enabled=device.type == "cuda"):
        for network, _ in itertools.product(networks, range(passes)):
            logits = torch.cat([inferer(chunk, network).float()
                                for chunk in torch.split(batch, SLICES_PER_PASS)])
            probs = torch.softmax(logits, dim=1)
            if stage.spatial_dims == 2:
                probs = probs.reshape(n_flips, depth, probs.shape[1], *probs.shape[2:])
                probs = probs.permute(0, 2, 1, 3, 4)                       # (T, C, z, y, x)
            unflipped = [torch.flip(probs[i], dims=[a + 1 for a in axes]) if axes else probs[i]
                         for i, axes in enumerate(flips)]
            summed = torch.stack(unflipped).sum(dim=0)
            mean_probs = summed if mean_probs is None else mean_probs + summed
    return (mean_probs / (n_flips * passes * members)).cpu().numpy().astype(np.float32)
