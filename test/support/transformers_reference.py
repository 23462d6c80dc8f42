"""transformers' Depth Anything V2 configured like one of our Depth Anything V2 networks, and holding
its weights: the reference test_depth_anything and benchmarks/model.py compare ours with.

Test code (transformers is a test dependency only); benchmarks/model.py puts test/ on its path.
"""
from __future__ import annotations


def depth_anything_hf_config(spec):
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

    from dpt_ros.model import to_hf_state_dict

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
