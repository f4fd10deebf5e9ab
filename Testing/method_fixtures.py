"""Helpers shared by the ``test_method_*`` files: a tiny network and a synthetic labelled batch."""

from __future__ import annotations

import numpy as np
import torch

from pancreas_ssl_seg.networks import build_network


def tiny_network(spatial_dims: int = 2, heads: tuple[str, ...] = (), seed: int = 0):
    torch.manual_seed(seed)
    return build_network({"spatial_dims": spatial_dims, "in_channels": 1, "out_channels": 3,
                          "channels": [8, 16], "strides": [2], "heads": list(heads),
                          "projection_dim": 8})


def blob_label(shape: tuple[int, ...], center_frac: float = 0.5, radius_frac: float = 0.25,
               lesion: bool = True) -> np.ndarray:
    """An ellipsoid 'pancreas' (1) with a smaller 'lesion' (2) inside, on a grid of ``shape``."""
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    dist = sum(((g - center_frac * n) / (radius_frac * n)) ** 2 for g, n in zip(grids, shape))
    label = (dist <= 1.0).astype(np.int64)
    if lesion:
        label[dist <= 0.2] = 2
    return label


def blob_batch(spatial_dims: int = 2, size: int = 32, n: int = 2, seed: int = 0) -> dict:
    """``n`` samples of a bright blob on noise; labels as the trainer's datasets give them."""
    rng = np.random.default_rng(seed)
    shape = (size,) * spatial_dims
    labels = np.stack([blob_label(shape, center_frac=0.4 + 0.1 * i) for i in range(n)])
    image = labels.astype(np.float32) + rng.normal(0, 0.3, labels.shape).astype(np.float32)
    return {"image": torch.from_numpy(image)[:, None], "label": torch.from_numpy(labels)[:, None],
            "has_label": torch.ones(n, dtype=torch.bool),
            "spacing_mm": torch.ones(n, spatial_dims)}
