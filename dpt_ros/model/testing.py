"""Helpers for tests and benchmarks: tiny networks with the structure of each published model, and
transformers' Depth Anything V2 (the reference the tests compare with) configured like ours.

Nothing here runs in the node.
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


def depth_anything_hf_config(spec: ModelSpec):
    """``transformers.DepthAnythingConfig`` (with its Dinov2 backbone config) describing the same
    network as a Depth Anything V2 ``spec``."""
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = spec.backbone
    if backbone.mlp_ratio != int(backbone.mlp_ratio):
        raise ValueError("transformers' Dinov2Config takes an integer mlp_ratio")
    dinov2 = Dinov2Config(
        hidden_size=backbone.embed_dim,
        num_hidden_layers=backbone.depth,
        num_attention_heads=backbone.num_heads,
        mlp_ratio=int(backbone.mlp_ratio),
        image_size=backbone.image_size,
        patch_size=backbone.patch_size,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        qkv_bias=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
        use_swiglu_ffn=False,
        out_indices=[hook + 1 for hook in backbone.hooks],  # hidden state 0 is the embeddings
        apply_layernorm=True,
        reshape_hidden_states=False,
    )
    max_depth = spec.task.max_depth
    if max_depth is not None and max_depth != int(max_depth):
        raise ValueError("transformers' DepthAnythingConfig takes an integer max_depth")
    return DepthAnythingConfig(
        backbone_config=dinov2,
        patch_size=backbone.patch_size,
        reassemble_hidden_size=backbone.embed_dim,
        reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=list(backbone.channels),
        fusion_hidden_size=spec.features,
        head_in_index=-1,
        head_hidden_size=32,
        depth_estimation_type="metric" if spec.is_metric else "relative",
        max_depth=int(max_depth) if max_depth is not None else 1,
    )


def transformers_depth_anything(model, directory):
    """transformers' ``DepthAnythingForDepthEstimation`` holding ``model``'s weights, loaded the way
    a hub checkpoint is: ``model`` is exported to the hub layout (``to_hf_state_dict``) and written
    with its config into ``directory`` (config.json + model.safetensors), then read back with
    ``from_pretrained``, transformers' own loading path (its renames included).  Raises when
    transformers reports any missing, unexpected or mis-shaped tensor.  Returns it in eval mode."""
    from pathlib import Path

    from safetensors.torch import save_file
    from transformers import DepthAnythingForDepthEstimation

    from . import to_hf_state_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    depth_anything_hf_config(model.spec).save_pretrained(directory)
    save_file({key: tensor.contiguous() for key, tensor in to_hf_state_dict(model).items()},
              directory / "model.safetensors")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one bar per load would litter test and benchmark output
    reference, info = DepthAnythingForDepthEstimation.from_pretrained(directory, output_loading_info=True)
    problems = {kind: keys for kind, keys in info.items() if keys}
    if problems:
        raise AssertionError(f"transformers did not load the exported hub layout cleanly: {problems}")
    return reference.float().eval()
