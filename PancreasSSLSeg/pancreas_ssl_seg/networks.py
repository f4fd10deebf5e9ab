"""The segmentation network shared by the engine and the training package.

A residual U-Net built from MONAI blocks, 2-D or 3-D through ``spatial_dims``. It is written here
rather than taken as ``monai.networks.nets.UNet`` because the self-supervised methods need the
bottleneck features and extra heads, which MONAI's nested ``SkipConnection`` layout hides.

Config (a plain dict, stored in the bundle's metadata for each stage)::

    {"spatial_dims": 2, "in_channels": 1, "out_channels": 3,
     "channels": [16, 32, 64, 128], "strides": [2, 2, 2],
     "dropout": 0.1, "heads": ["sdm", "projection", "restoration"], "projection_dim": 64,
     "stem_stride": 2}

``len(strides) == len(channels) - 1``; the input's spatial size must be divisible by the product
of the strides and ``stem_stride`` (see ``size_divisor``; the inferers pad to it).

``stem_stride`` (default 1): 2 makes the first residual unit downsample, so no 3x3 convolution
runs at full resolution except one transposed convolution that brings the decoded features back
before the heads (as in MONAI's ``UNet``). Measured on 2 CPU threads, 16-256 channels, batch 8
of 192x192: 1.63 s per training iteration with stride 1, see NOTES.md for stride 2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

# MONAI is imported where a network is built (``PancreasUNet.__init__``), not here: ``import monai``
# loads every MONAI subpackage (2-3 s on a 2-core CPU, benchmarks/NOTES.md), which the config
# checks and ``size_divisor`` below (used by bundle checks and the training config) do not need.

KNOWN_HEADS = ("sdm", "projection", "restoration")
CONFIG_KEYS = ("spatial_dims", "in_channels", "out_channels", "channels", "strides")


def validate_network_config(config: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first problem of a network config."""
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"network config lacks {missing}")
    if config["spatial_dims"] not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {config['spatial_dims']!r}")
    channels, strides = list(config["channels"]), list(config["strides"])
    if len(channels) < 2 or len(strides) != len(channels) - 1:
        raise ValueError("need at least 2 channel levels and len(strides) == len(channels) - 1")
    if not all(isinstance(c, int) and 0 < c <= 1024 for c in channels):
        raise ValueError(f"channels must be positive integers <= 1024, got {channels}")
    stem_stride = config.get("stem_stride", 1)
    if isinstance(stem_stride, bool) or stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {config.get('stem_stride')!r}")
    unknown = set(config.get("heads", [])) - set(KNOWN_HEADS)
    if unknown:
        raise ValueError(f"unknown heads {sorted(unknown)}; known: {KNOWN_HEADS}")


class PancreasUNet(nn.Module):
    """Residual U-Net with a segmentation head and optional SSL heads.

    Shapes: input ``(N, in_channels, *spatial)``; logits ``(N, out_channels, *spatial)``;
    ``bottleneck`` ``(N, channels[-1], *spatial / prod(strides))``.
    """

    def __init__(self, config: dict[str, Any]):
        from monai.networks.blocks import Convolution, ResidualUnit

        super().__init__()
        validate_network_config(config)
        self.config = dict(config)
        dims = config["spatial_dims"]
        channels, strides = list(config["channels"]), list(config["strides"])
        dropout = config.get("dropout", 0.0) or None
        heads = set(config.get("heads", []))

        def unit(c_in: int, c_out: int, stride: int = 1) -> nn.Module:
            return ResidualUnit(dims, c_in, c_out, strides=stride, subunits=2,
                                norm="INSTANCE", act="PRELU", dropout=dropout)

        stem_stride = int(config.get("stem_stride", 1))
        self.stem = unit(config["in_channels"], channels[0], stem_stride)
        self.stem_up = None if stem_stride == 1 else Convolution(
            dims, channels[0], channels[0], strides=stem_stride, kernel_size=3,
            is_transposed=True, norm="INSTANCE", act="PRELU")
        self.down = nn.ModuleList(unit(channels[i], channels[i + 1], strides[i])
                                  for i in range(len(strides)))
        self.up = nn.ModuleList(
            Convolution(dims, channels[i + 1], channels[i], strides=strides[i], kernel_size=3,
                        is_transposed=True, norm="INSTANCE", act="PRELU")
            for i in reversed(range(len(strides))))
        self.merge = nn.ModuleList(unit(2 * channels[i], channels[i])
                                   for i in reversed(range(len(strides))))
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.seg_head = conv(channels[0], config["out_channels"], kernel_size=1)
        self.sdm_head = conv(channels[0], config["out_channels"] - 1, 1) if "sdm" in heads else None
        self.restoration_head = conv(channels[0], 1, 1) if "restoration" in heads else None
        if "projection" in heads:
            proj_dim = config.get("projection_dim", 64)
            self.projection_head = nn.Sequential(conv(channels[-1], channels[-1], 1), nn.ReLU(),
                                                 conv(channels[-1], proj_dim, 1))
        else:
            self.projection_head = None

    def _decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        bottleneck = skips.pop()
        y = bottleneck
        for up, merge in zip(self.up, self.merge):
            y = merge(torch.cat([up(y), skips.pop()], dim=1))
        if self.stem_up is not None:
            y = self.stem_up(y)
        return y, bottleneck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation logits, the only output inference needs."""
        decoded, _ = self._decode(x)
        return self.seg_head(decoded)

    def forward_heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every enabled output: ``logits``, ``bottleneck`` and the SSL heads' outputs."""
        decoded, bottleneck = self._decode(x)
        out = {"logits": self.seg_head(decoded), "bottleneck": bottleneck}
        if self.sdm_head is not None:
            out["sdm"] = torch.tanh(self.sdm_head(decoded))
        if self.restoration_head is not None:
            out["restoration"] = self.restoration_head(decoded)
        if self.projection_head is not None:
            out["projection"] = nn.functional.normalize(self.projection_head(bottleneck), dim=1)
        return out

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights of the encoder path (stem + down blocks), what PolyCL pre-training hands on."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(("stem.", "down."))}


def size_divisor(config: dict[str, Any]) -> int:
    """What every spatial side of the network's input must be a multiple of."""
    return int(np.prod(config["strides"])) * int(config.get("stem_stride", 1))


def state_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Name and shape of every tensor of ``build_network(config).state_dict()``, from the config
    alone: what a bundle's weights must hold. Building the network (even on the meta device)
    imports MONAI (2-3 s, see the top of this file) just to check a bundle; the layout of the
    MONAI blocks used above is written out here instead, and
    ``Testing/engine/test_network_shapes.py`` checks it against the built network for every kind
    of config (a MONAI version that names or shapes its parameters differently fails there, not
    in users' hands)."""
    validate_network_config(config)
    dims = config["spatial_dims"]
    channels, strides = list(config["channels"]), list(config["strides"])
    heads = set(config.get("heads", []))
    kernel, pointwise = (3,) * dims, (1,) * dims
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, c_in: int, c_out: int, size: tuple[int, ...],
             transposed: bool = False) -> None:
        shapes[f"{name}.weight"] = (c_in, c_out, *size) if transposed else (c_out, c_in, *size)
        shapes[f"{name}.bias"] = (c_out,)

    def convolution(name: str, c_in: int, c_out: int, transposed: bool = False) -> None:
        """MONAI ``Convolution``: the convolution, then instance norm (no affine parameters),
        dropout and PReLU (one shared slope) in its ``adn`` block."""
        conv(f"{name}.conv", c_in, c_out, kernel, transposed)
        shapes[f"{name}.adn.A.weight"] = (1,)

    def unit(name: str, c_in: int, c_out: int, stride: int = 1) -> None:
        """MONAI ``ResidualUnit`` with two subunits; a residual convolution where the shape
        changes (3x3 when it strides, else 1x1)."""
        convolution(f"{name}.conv.unit0", c_in, c_out)
        convolution(f"{name}.conv.unit1", c_out, c_out)
        if stride != 1 or c_in != c_out:
            conv(f"{name}.residual", c_in, c_out, kernel if stride != 1 else pointwise)

    stem_stride = int(config.get("stem_stride", 1))
    unit("stem", config["in_channels"], channels[0], stem_stride)
    if stem_stride != 1:
        convolution("stem_up", channels[0], channels[0], transposed=True)
    for i, stride in enumerate(strides):
        unit(f"down.{i}", channels[i], channels[i + 1], stride)
    for j, i in enumerate(reversed(range(len(strides)))):
        convolution(f"up.{j}", channels[i + 1], channels[i], transposed=True)
        unit(f"merge.{j}", 2 * channels[i], channels[i])
    conv("seg_head", channels[0], config["out_channels"], pointwise)
    if "sdm" in heads:
        conv("sdm_head", channels[0], config["out_channels"] - 1, pointwise)
    if "restoration" in heads:
        conv("restoration_head", channels[0], 1, pointwise)
    if "projection" in heads:
        conv("projection_head.0", channels[-1], channels[-1], pointwise)
        conv("projection_head.2", channels[-1], config.get("projection_dim", 64), pointwise)
    return shapes


def build_network(config: dict[str, Any]) -> PancreasUNet:
    """Build the network a stage config describes (weights random until loaded)."""
    return PancreasUNet(config)
