"""The DPT network: backbone -> reassemble -> fusion -> head (DPT and Depth Anything V2)."""
from __future__ import annotations

import torch
from torch import nn

from ..depth import relative_to_metric
from .backbone import Backbone
from .layers import DepthHead, Fusion, Reassemble, SegmentationHead
from .variants import HYBRID, ModelSpec

#: DPT's input sides must be multiples of this (patch size 16, then one more halving in
#: reassemble); Depth Anything V2's are multiples of its 14-pixel patch (``ModelSpec.input_multiple``).
INPUT_MULTIPLE = 32


class DPT(nn.Module):
    """Dense Prediction Transformer: one task network (:class:`ModelSpec`) of a variant.

    ``forward(x)`` takes a normalized batch ``(B, 3, H, W)`` whose sides are multiples of
    ``spec.input_multiple`` (32 for DPT, 14 for Depth Anything V2) and returns, at the same
    ``H, W``: relative inverse depth ``(B, H, W)``, metric depth in metres ``(B, H, W)`` (float32)
    for the metric variants, or class logits ``(B, num_classes, H, W)``.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        backbone = spec.backbone
        self.backbone = Backbone(backbone)
        self.reassemble = Reassemble(
            backbone.embed_dim,
            backbone.channels,
            spec.readout,
            direct=(0, 1) if backbone.kind == HYBRID else (),
        )
        self.fusion = Fusion(backbone.channels, spec.features, batch_norm=spec.is_segmentation)
        if spec.is_segmentation:
            self.head = SegmentationHead(spec.features, spec.task.num_classes, upsample=True)
            self.aux_head = SegmentationHead(spec.features, spec.task.num_classes, upsample=False)
        else:
            self.head = DepthHead(spec.features, max_depth=spec.task.max_depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = self.spec.input_multiple
        if x.dim() != 4 or x.shape[1] != 3 or height % multiple or width % multiple:
            raise ValueError(
                f"{self.spec.variant.name} expects a (B, 3, H, W) batch with H and W multiples of {multiple}, "
                f"got {tuple(x.shape)}"
            )
        features, grid = self.backbone(x)
        fused = self.fusion(self.reassemble(features, grid))
        if self.spec.is_segmentation:
            return self.head(fused)
        out = self.head(fused, size=(height, width))
        if self.spec.task.depth_scale is not None:  # metric DPT: affine map in inverse depth
            out = relative_to_metric(out.float(), self.spec.task.depth_scale, self.spec.task.depth_shift)
        return out

    def extra_repr(self) -> str:
        return f"{self.spec.name}, output={self.spec.task.output_kind!r}"
