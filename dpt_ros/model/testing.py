"""Helpers for tests and benchmarks: tiny networks with the structure of each published model.

Nothing here runs in the node.  (transformers' twins of our networks, the references the tests and
benchmarks compare with, are test code: test/support/transformers_reference.py and
test/test_model_parity.py, since transformers is only a test dependency.)
"""
from __future__ import annotations

import dataclasses

from .variants import (
    DEPTH,
    HYBRID,
    LOGITS,
    METRIC_DEPTH,
    RELATIVE_INVERSE_DEPTH,
    SEGMENTATION,
    VARIANTS,
    BackboneSpec,
    ModelSpec,
)

#: Small backbones with the structure of each published one (hook pattern, channel ratios,
#: hybrid ResNet stem), for fast tests.
TINY_BACKBONES = {
    "large": VARIANTS["dpt_tiny"].backbone,  # channels (D/4, D/2, D, D) like ViT-L
    "base": dataclasses.replace(VARIANTS["dpt_tiny"].backbone, channels=(8, 16, 32, 64)),  # (D/8 .. D)
    "hybrid": BackboneSpec(
        kind=HYBRID,
        embed_dim=64,
        depth=4,
        num_heads=4,
        mlp_ratio=2.0,
        hooks=(0, 1, 2, 3),
        channels=(32, 64, 64, 64),
        image_size=64,
        resnet_layers=(1, 1, 1),
        resnet_channels=(32, 64, 128),
        resnet_stem_channels=16,
        resnet_groups=8,
    ),
}

#: Output kind -> task changes of a tiny model.
_TINY_OUTPUTS = {
    RELATIVE_INVERSE_DEPTH: (DEPTH, {}),
    METRIC_DEPTH: (DEPTH, dict(
        output_kind=METRIC_DEPTH,
        depth_scale=VARIANTS["dpt_hybrid_kitti"].tasks[DEPTH].depth_scale,
        depth_shift=VARIANTS["dpt_hybrid_kitti"].tasks[DEPTH].depth_shift,
    )),
    LOGITS: (SEGMENTATION, {}),
}


def tiny_model(structure: str = "large", output_kind: str = RELATIVE_INVERSE_DEPTH, **variant) -> ModelSpec:
    """A tiny random network with the structure of ``large``, ``base`` or ``hybrid`` (``dpt_tiny``
    widths) and the head of ``output_kind``; ``variant`` changes e.g. the readout."""
    task, task_changes = _TINY_OUTPUTS[output_kind]
    return VARIANTS["dpt_tiny"].model(task).replace(
        backbone=dataclasses.asdict(TINY_BACKBONES[structure]),
        task=task_changes,
        name=f"tiny_{structure}_{output_kind}",
        **variant,
    )


# --- Depth Anything V2 --------------------------------------------------------------------------

def tiny_depth_anything(output_kind: str = RELATIVE_INVERSE_DEPTH, max_depth: float = 20.0, **backbone) -> ModelSpec:
    """``depth_anything_v2_tiny`` (a four-block DINOv2 with Depth Anything V2's structure), relative
    or metric (sigmoid x ``max_depth``); ``backbone`` changes backbone fields (e.g. image_size)."""
    task = dict(output_kind=METRIC_DEPTH, max_depth=max_depth) if output_kind == METRIC_DEPTH else {}
    return VARIANTS["depth_anything_v2_tiny"].model(DEPTH).replace(
        backbone=backbone or None, task=task, name=f"tiny_depth_anything_{output_kind}")
