"""Transformer backbones on timm, returning the four feature maps DPT reassembles.

The timm model is kept whole (minus its ImageNet classifier) under ``Backbone.vit`` so its
parameters keep timm's names; only the forward is ours: it resizes the position embedding to the
token grid of the actual input, so any input whose sides are multiples of the patch size runs,
square or not.  DPT's ViTs resize it bilinearly to the grid (align_corners=False, no antialias, as
DPT was trained).  DINOv2 (Depth Anything V2) resizes it as the DINOv2 reference code does:
bicubic with the *scale factors* (grid + 0.1) / trained grid, which is not the same as resizing to
the grid's size (transformers does the latter and differs from the reference by 0.4-0.9 % of the
depth off the trained grid); its tapped blocks also go through the final norm.
"""
from __future__ import annotations

from functools import partial
from typing import List, Tuple

import timm
import torch
import torch.nn.functional as F
from timm.layers import GroupNormAct, HybridEmbed, StdConv2dSame
from timm.models.resnetv2 import ResNetV2
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .variants import DINOV2, HYBRID, BackboneSpec

# timm's standardized convolutions in the hybrid ResNet use this epsilon.
_STD_CONV_EPS = 1e-8
# timm's initial LayerScale value for its DINOv2 models (every tensor is set after building anyway).
_DINOV2_LAYER_SCALE_INIT = 1e-5
# The DINOv2 reference adds this to the token grid in its scale factors ("to avoid floating point
# error in the interpolation", dinov2 interpolate_offset); Depth Anything V2 keeps it.
DINOV2_INTERPOLATE_OFFSET = 0.1


def _create_vit(spec: BackboneSpec) -> VisionTransformer:
    if spec.timm_name is not None:
        vit = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, img_size=spec.image_size)
    elif spec.kind == HYBRID:
        resnet = ResNetV2(
            layers=list(spec.resnet_layers),
            channels=tuple(spec.resnet_channels),
            stem_chs=spec.resnet_stem_channels,
            num_classes=0,
            global_pool="",
            preact=False,
            stem_type="same",
            conv_layer=partial(StdConv2dSame, eps=_STD_CONV_EPS),
            norm_layer=partial(GroupNormAct, num_groups=spec.resnet_groups),
        )
        vit = VisionTransformer(
            img_size=spec.image_size,
            patch_size=1,
            embed_layer=partial(HybridEmbed, backbone=resnet),
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
            mlp_ratio=spec.mlp_ratio,
            num_classes=0,
        )
    else:
        vit = VisionTransformer(
            img_size=spec.image_size,
            patch_size=spec.patch_size,
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
            mlp_ratio=spec.mlp_ratio,
            num_classes=0,
            # DINOv2 blocks scale both residual branches (LayerScale), as timm's *_dinov2 models do
            init_values=_DINOV2_LAYER_SCALE_INIT if spec.kind == DINOV2 else None,
        )
    _check_matches_spec(vit, spec)
    return vit


def _check_matches_spec(vit: VisionTransformer, spec: BackboneSpec) -> None:
    found = dict(
        embed_dim=vit.embed_dim,
        depth=len(vit.blocks),
        num_heads=vit.blocks[0].attn.num_heads,
        mlp_ratio=vit.blocks[0].mlp.fc1.out_features / vit.embed_dim,
        pos_embed_tokens=vit.pos_embed.shape[1],
        hybrid=isinstance(vit.patch_embed, HybridEmbed),
        prefix_tokens=vit.num_prefix_tokens,
        layer_scale=not isinstance(vit.blocks[0].ls1, nn.Identity),
    )
    expected = dict(
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        mlp_ratio=spec.mlp_ratio,
        pos_embed_tokens=spec.grid_size**2 + 1,
        hybrid=spec.kind == HYBRID,
        prefix_tokens=1,
        layer_scale=spec.kind == DINOV2,
    )
    if spec.kind != HYBRID:
        found["patch_size"] = tuple(vit.patch_embed.proj.kernel_size)
        expected["patch_size"] = (spec.patch_size, spec.patch_size)
    if spec.kind == HYBRID:
        stages = vit.patch_embed.backbone.stages
        found["resnet_layers"] = tuple(len(stage.blocks) for stage in stages)
        found["resnet_channels"] = tuple(stage.blocks[-1].conv3.out_channels for stage in stages)
        expected["resnet_layers"] = tuple(spec.resnet_layers)
        expected["resnet_channels"] = tuple(spec.resnet_channels)
    if found != expected:
        raise ValueError(f"timm model {spec.timm_name!r} does not match its spec: {found} != {expected}")


def resize_pos_embed(pos_embed: torch.Tensor, grid: Tuple[int, int], num_prefix_tokens: int = 1) -> torch.Tensor:
    """Bilinearly resample a square ViT position embedding to a ``grid = (rows, cols)`` token grid."""
    prefix, table = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    side = int(round(table.shape[1] ** 0.5))
    if (side, side) == tuple(grid):
        return pos_embed
    table = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=grid, mode="bilinear", align_corners=False, antialias=False)
    table = table.flatten(2).transpose(1, 2)
    return torch.cat([prefix, table], dim=1)


def resize_pos_embed_dinov2(pos_embed: torch.Tensor, grid: Tuple[int, int], num_prefix_tokens: int = 1,
                            offset: float = DINOV2_INTERPOLATE_OFFSET) -> torch.Tensor:
    """Resample a square DINOv2 position embedding to a ``grid = (rows, cols)`` token grid as the
    DINOv2 / Depth Anything V2 reference does: bicubic (align_corners=False, no antialias) with the
    scale factors ``((rows + offset) / side, (cols + offset) / side)`` - the output size is then
    ``(rows, cols)`` but the sampling positions follow the scale factors, not the sizes - computed
    in float32 and returned in the embedding's dtype.  The trained grid is returned unchanged."""
    prefix, table = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    side = int(round(table.shape[1] ** 0.5))
    rows, cols = grid
    if (side, side) == (rows, cols):
        return pos_embed
    table = table.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    table = F.interpolate(table, scale_factor=((rows + offset) / side, (cols + offset) / side), mode="bicubic",
                          align_corners=False, antialias=False)
    if tuple(table.shape[-2:]) != (rows, cols):  # the reference asserts the same
        raise AssertionError(f"position embedding resized to {tuple(table.shape[-2:])}, not {grid}")
    table = table.flatten(2).transpose(1, 2).to(pos_embed.dtype)
    return torch.cat([prefix, table], dim=1)


class Backbone(nn.Module):
    """The encoder of DPT: returns the four tapped feature maps of an image batch.

    ``forward`` returns ``(features, grid)``: ``grid = (H // patch, W // patch)`` and ``features`` a
    list of four tensors, token sequences ``(B, 1 + rows*cols, D)`` (readout token first) for the
    tapped transformer blocks (after the final norm for DINOv2) and ``(B, C, H', W')`` maps for the
    tapped ResNet stages of a hybrid.

    A DINOv2 backbone also holds DINOv2's ``mask_token`` (used only in its masked-image
    pre-training, never here) because both published Depth Anything V2 layouts store it: keeping it
    lets them load strictly and convert into each other unchanged.
    """

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        self.spec = spec
        self.vit = _create_vit(spec)
        self.hybrid = spec.kind == HYBRID
        self.dinov2 = spec.kind == DINOV2
        if self.dinov2:
            self.mask_token = nn.Parameter(torch.zeros(1, spec.embed_dim))
        self.block_hooks = tuple(spec.hooks[2:] if self.hybrid else spec.hooks)
        self.patch_size = spec.patch_size
        self.resize_pos_embed = resize_pos_embed_dinov2 if self.dinov2 else resize_pos_embed

    def forward(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], Tuple[int, int]]:
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        vit = self.vit
        features: List[torch.Tensor] = []
        if self.hybrid:
            resnet = vit.patch_embed.backbone
            x = resnet.stem(x)
            for index, stage in enumerate(resnet.stages):
                x = stage(x)
                if index < 2:
                    features.append(x)
            x = resnet.norm(x)
        tokens = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([vit.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.resize_pos_embed(vit.pos_embed, grid)
        tokens = vit.norm_pre(vit.pos_drop(tokens))
        for index in range(self.block_hooks[-1] + 1):
            tokens = vit.blocks[index](tokens)
            if index in self.block_hooks:
                features.append(vit.norm(tokens) if self.dinov2 else tokens)
        return features, grid
