"""The convolutional decoder of DPT: readout, reassemble, fusion and the output heads.

Names follow the paper (Ranftl et al., "Vision Transformers for Dense Prediction", 2021):
the tokens of four transformer layers are *reassembled* into image-like maps at 4x, 2x, 1x and
1/2x the token grid (1/4 .. 1/32 of the input for DPT's 16-pixel patches), *fused* coarse to fine
by RefineNet-style blocks, and a *head* turns the finest fused map into the prediction at the
input's resolution.

Depth Anything V2 uses the same blocks on a 14-pixel-patch DINOv2 grid.  There the grid may be
odd, so the stride-2 map has ``ceil(grid / 2)`` rows and doubling it overshoots: each fusion block
upsamples to the size of the next finer map, and the depth head to the input size, instead of by
a factor of two.  For DPT's inputs (multiples of 32) those sizes are exactly twice the map, and
with ``align_corners=True`` bilinear interpolation to a size equals the x2 interpolation bit for bit.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class Readout(nn.Module):
    """Maps the ``1 + N`` tokens of a layer to ``N`` patch tokens, using the readout token.

    ``ignore`` drops it, ``add`` adds it to every patch token, ``project`` concatenates it to every
    patch token and applies Linear(2D -> D) + GELU.
    """

    def __init__(self, kind: str, dim: int):
        super().__init__()
        self.kind = kind
        if kind == "project":
            self.linear = nn.Linear(2 * dim, dim)
        elif kind not in ("ignore", "add"):
            raise ValueError(f"unknown readout {kind!r}")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        readout, patches = tokens[:, :1], tokens[:, 1:]
        if self.kind == "ignore":
            return patches
        if self.kind == "add":
            return patches + readout
        # Linear over [patch, readout] == W_patch @ patch + (W_readout @ readout + b): the readout
        # half is computed once per image instead of once per token.
        dim = patches.shape[-1]
        weight = self.linear.weight
        per_image = F.linear(readout, weight[:, dim:], self.linear.bias)
        return F.gelu(F.linear(patches, weight[:, :dim]) + per_image)


def _resample(channels: int, factor: float) -> nn.Module:
    if factor > 1:
        return nn.ConvTranspose2d(channels, channels, kernel_size=int(factor), stride=int(factor))
    if factor == 1:
        return nn.Identity()
    return nn.Conv2d(channels, channels, kernel_size=3, stride=int(round(1 / factor)), padding=1)


#: Resampling of the four reassembled maps relative to the 1/16 token grid.
REASSEMBLE_FACTORS = (4.0, 2.0, 1.0, 0.5)


class ReassembleStage(nn.Module):
    """Tokens of one layer -> readout -> (D, H/16, W/16) map -> 1x1 projection -> resample."""

    def __init__(self, dim: int, channels: int, factor: float, readout: str):
        super().__init__()
        self.readout = Readout(readout, dim)
        self.projection = nn.Conv2d(dim, channels, kernel_size=1)
        self.resample = _resample(channels, factor)

    def forward(self, tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        x = self.readout(tokens).transpose(1, 2).unflatten(2, grid)
        return self.resample(self.projection(x))


class Reassemble(nn.Module):
    """The four reassemble stages.  ``direct`` stages (the ResNet maps of the hybrid) pass through."""

    def __init__(self, dim: int, channels: Sequence[int], readout: str, direct: Sequence[int] = ()):
        super().__init__()
        self.direct = tuple(direct)
        self.stages = nn.ModuleList(
            nn.Identity() if index in self.direct else ReassembleStage(dim, width, factor, readout)
            for index, (width, factor) in enumerate(zip(channels, REASSEMBLE_FACTORS))
        )

    def forward(self, features: List[torch.Tensor], grid: Tuple[int, int]) -> List[torch.Tensor]:
        return [
            feature if index in self.direct else stage(feature, grid)
            for index, (stage, feature) in enumerate(zip(self.stages, features))
        ]


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit: x + conv(relu(conv(relu(x)))), batch norm after each conv
    in the segmentation models (the convolutions then have no bias)."""

    def __init__(self, features: int, batch_norm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=not batch_norm)
        self.norm1 = nn.BatchNorm2d(features) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=not batch_norm)
        self.norm2 = nn.BatchNorm2d(features) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm1(self.conv1(F.relu(x)))
        out = self.norm2(self.conv2(F.relu(out)))
        return out + x


class FusionBlock(nn.Module):
    """RefineNet-style fusion: add the refined skip map, refine, upsample x2, project (1x1).

    ``skip_unit`` is unused in the coarsest block, which has no skip input; the published
    checkpoints carry its weights all the same.
    """

    def __init__(self, features: int, batch_norm: bool):
        super().__init__()
        self.skip_unit = ResidualConvUnit(features, batch_norm)
        self.refine_unit = ResidualConvUnit(features, batch_norm)
        self.projection = nn.Conv2d(features, features, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None,
                size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """``size``: the output's (height, width) (the next finer map's); None doubles the input."""
        if skip is not None:
            x = x + self.skip_unit(skip)
        x = self.refine_unit(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.projection(x)


class Fusion(nn.Module):
    """3x3 convolutions of the reassembled maps to ``features`` channels, then fusion blocks
    from the coarsest map (index 3, 1/32) to the finest (index 0); returns the 1/2-resolution map."""

    def __init__(self, channels: Sequence[int], features: int, batch_norm: bool):
        super().__init__()
        self.input_convs = nn.ModuleList(
            nn.Conv2d(width, features, kernel_size=3, padding=1, bias=False) for width in channels
        )
        self.blocks = nn.ModuleList(FusionBlock(features, batch_norm) for _ in channels)

    def forward(self, maps: List[torch.Tensor]) -> torch.Tensor:
        fused: Optional[torch.Tensor] = None
        for index in range(len(self.blocks) - 1, -1, -1):
            skip = self.input_convs[index](maps[index])
            # each block upsamples to the next finer map's size; the finest one doubles
            size = tuple(maps[index - 1].shape[-2:]) if index > 0 else None
            fused = self.blocks[index](skip, size=size) if fused is None else self.blocks[index](fused, skip, size)
        return fused


class DepthHead(nn.Module):
    """conv3x3 (F -> F/2), bilinear upsample to the input size, conv3x3 (F/2 -> 32), ReLU,
    conv1x1 (32 -> 1), then ReLU (relative inverse depth) or, with ``max_depth``, sigmoid x
    max_depth (Depth Anything V2's metric head: metres, computed in float32)."""

    def __init__(self, features: int, max_depth: Optional[float] = None):
        super().__init__()
        self.max_depth = max_depth
        self.conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features // 2, 32, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(32, 1, kernel_size=1)

    def forward(self, x: torch.Tensor, size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """``size``: the output's (height, width); None doubles the input (DPT's fused map is 1/2)."""
        x = self.conv1(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        x = self.conv3(F.relu(self.conv2(x))).squeeze(1)
        if self.max_depth is None:
            return F.relu(x)
        return torch.sigmoid(x.float()) * self.max_depth

    def extra_repr(self) -> str:
        return "relative inverse depth" if self.max_depth is None else f"metric, max_depth={self.max_depth:g} m"


class SegmentationHead(nn.Module):
    """conv3x3 (no bias) -> BN -> ReLU -> Dropout(0.1) -> conv1x1 to the classes [-> x2 upsample].

    The auxiliary head of the segmentation checkpoints is the same without the upsampling; it is
    only used in training and is kept so that the checkpoints load strictly.
    """

    def __init__(self, features: int, num_classes: int, upsample: bool):
        super().__init__()
        self.upsample = upsample
        self.conv = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(features)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Conv2d(features, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.classifier(self.dropout(F.relu(self.norm(self.conv(x)))))
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        return x
