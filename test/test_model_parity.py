"""Our DPT against transformers' (a test-only reference): numerical parity and the HF layout.

The same random weights go into transformers' model and, through the HF -> ours key mapping,
into ours; the outputs must agree to 1e-5.  Every parameter and BatchNorm statistic is
randomized (``randomize_``), so a wrong mapping, a skipped layer or a wrong interpolation mode
shows up as an O(1) difference.  transformers' models run square inputs only (the hybrid only
at its position-embedding size); for non-square inputs its ViT parts are driven directly
(embeddings and encoder, then the neck with explicit patch counts, then the head).
"""
import pytest
import torch

import transformers  # noqa: F401  (test-only reference, in requirements.txt: missing it must fail, not skip)

from dpt_ros.depth import relative_to_metric
from dpt_ros.model import DPT, VARIANTS, build_model, checkpoint_layouts, to_hf_state_dict
from dpt_ros.model import to_original_state_dict
from dpt_ros.model.random_init import randomize_
from dpt_ros.model.testing import tiny_model
from dpt_ros.model.variants import DINOV2, HYBRID

TOLERANCE = 1e-5


def hf_config_kwargs(spec):
    """``transformers.DPTConfig`` arguments describing the same network as ``spec``."""
    backbone = spec.backbone
    kwargs = dict(
        hidden_size=backbone.embed_dim,
        num_hidden_layers=backbone.depth,
        num_attention_heads=backbone.num_heads,
        intermediate_size=int(backbone.embed_dim * backbone.mlp_ratio),
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-6,  # timm's; the HF hub configs say 1e-12
        image_size=backbone.image_size,
        patch_size=backbone.patch_size,
        qkv_bias=True,
        backbone_out_indices=list(backbone.hooks),
        readout_type=spec.readout,
        reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=list(backbone.channels),
        fusion_hidden_size=spec.features,
        head_in_index=-1,
        add_projection=False,
        use_batch_norm_in_fusion_residual=spec.is_segmentation,
    )
    if spec.is_segmentation:
        kwargs.update(num_labels=spec.task.num_classes, use_auxiliary_head=True, semantic_classifier_dropout=0.1)
    if backbone.kind == HYBRID:
        grid = backbone.grid_size
        kwargs.update(
            is_hybrid=True,
            backbone_featmap_shape=[1, backbone.resnet_channels[-1], grid, grid],
            backbone_config=dict(
                model_type="bit",
                global_padding="same",
                layer_type="bottleneck",
                depths=list(backbone.resnet_layers),
                hidden_sizes=list(backbone.resnet_channels),
                embedding_size=backbone.resnet_stem_channels,
                num_groups=backbone.resnet_groups,
                out_features=[f"stage{i + 1}" for i in range(len(backbone.resnet_layers))],
                embedding_dynamic_padding=True,
            ),
        )
    return kwargs


def hf_model(spec, randomize=True, seed=0):
    """transformers' DPTForDepthEstimation / DPTForSemanticSegmentation for ``spec`` in eval mode,
    with ``randomize_`` weights (or, under a meta device, just the structure).  It runs square
    inputs only, and the hybrid only at ``backbone.image_size``."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTForSemanticSegmentation

    config = DPTConfig(**hf_config_kwargs(spec))
    cls = DPTForSemanticSegmentation if spec.is_segmentation else DPTForDepthEstimation
    if not randomize:
        return cls(config).eval()
    with torch.device("meta"):  # skip transformers' slow initialization: every tensor is set below
        model = cls(config)
    return randomize_(model.to_empty(device="cpu"), seed).eval()


def _hf_forward(model, spec, x):
    with torch.no_grad():
        out = model(pixel_values=x)
    if spec.is_segmentation:
        return out.logits
    if spec.is_metric:  # transformers has no metric head: apply the published conversion
        return relative_to_metric(out.predicted_depth, spec.task.depth_scale, spec.task.depth_shift)
    return out.predicted_depth


def _parity(spec, size, batch=1, seed=0):
    """max |ours - transformers| for one random input, after loading HF weights into ours
    (for metric depth: relative to the depth)."""
    if spec.backbone.kind == HYBRID:  # transformers' hybrid only runs at its image_size
        spec = spec.replace(backbone=dict(image_size=size))
    reference = hf_model(spec, seed=seed)
    ours = build_model(spec, weights=reference.state_dict())
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    expected = _hf_forward(reference, spec, x)
    with torch.no_grad():
        got = ours(x)
    assert got.shape == expected.shape
    # the comparison means something only if the outputs are O(1) and not mostly clamped
    assert expected.abs().max() > 0.1
    if not spec.is_segmentation:
        assert (expected > 0).float().mean() > 0.3
    diff = (got - expected).abs()
    if spec.is_metric:  # metres up to 1/shift (173 m for KITTI): compare relative to the depth
        diff = diff / expected
    diff = diff.max().item()
    kind = "relative" if spec.is_metric else "absolute"
    print(f"{spec.name} {size}x{size}: max {kind} diff = {diff:.3g} (max|ref| = {expected.abs().max():.3g})")
    return diff


TINY_CASES = [
    ("large", "relative_inverse_depth", {}),
    ("large", "metric_depth", {}),
    ("large", "logits", {}),
    ("base", "relative_inverse_depth", {}),
    ("base", "logits", {}),
    ("hybrid", "relative_inverse_depth", {}),
    ("hybrid", "metric_depth", {}),
    ("hybrid", "logits", {}),
    ("large", "relative_inverse_depth", {"readout": "ignore"}),
    ("base", "relative_inverse_depth", {"readout": "add"}),
]


@pytest.mark.parametrize("structure,output,changes", TINY_CASES, ids=lambda v: str(v) if v else "project")
def test_tiny_parity_with_transformers(structure, output, changes):
    spec = tiny_model(structure, output, **changes)
    assert _parity(spec, size=96, batch=2) <= TOLERANCE


@pytest.mark.parametrize("task", ["depth", "segmentation"])
def test_registered_tiny_variant_matches_transformers(task):
    assert _parity(VARIANTS["dpt_tiny"].model(task), size=64) <= TOLERANCE


FULL_SIZE = [
    ("dpt_large", "depth"),
    ("dpt_large", "segmentation"),
    ("dpt_hybrid", "depth"),
    ("dpt_hybrid", "segmentation"),
    ("dpt_hybrid_nyu", "depth"),
    ("dpt_base", "depth"),
    ("dpt_base", "segmentation"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,task", FULL_SIZE)
def test_full_size_parity_with_transformers(name, task):
    assert _parity(VARIANTS[name].model(task), size=96) <= TOLERANCE


def _hf_forward_non_square(model, spec, x):
    """transformers' DPT pieces on a non-square input: its embeddings interpolate the position
    embedding to any grid and its neck accepts explicit patch counts (ViT backbones only)."""
    height, width = x.shape[-2:]
    with torch.no_grad():
        out = model.dpt(x, output_hidden_states=True)
        hooks = model.config.backbone_out_indices
        hidden = [h for index, h in enumerate(out.hidden_states[1:]) if index in hooks]
        return model.head(model.neck(hidden, height // 16, width // 16))


def _non_square_parity(spec, size, seed=0):
    reference = hf_model(spec, seed=seed)
    ours = build_model(spec, weights=reference.state_dict())
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))
    expected = _hf_forward_non_square(reference, spec, x)
    with torch.no_grad():
        got = ours(x)
    assert got.shape == expected.shape == (1, *([spec.task.num_classes] if spec.is_segmentation else []), *size)
    assert expected.abs().max() > 0.1
    diff = (got - expected).abs().max().item()
    print(f"{spec.name} {size[0]}x{size[1]}: max absolute diff = {diff:.3g}")
    return diff


@pytest.mark.parametrize("size", [(64, 160), (160, 96), (96, 128)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize(
    "structure,output",
    [("large", "relative_inverse_depth"), ("base", "relative_inverse_depth"), ("large", "logits")],
)
def test_tiny_non_square_parity_with_transformers_parts(structure, output, size):
    assert _non_square_parity(tiny_model(structure, output), size) <= TOLERANCE


@pytest.mark.slow
def test_full_size_non_square_parity_with_transformers_parts():
    assert _non_square_parity(VARIANTS["dpt_large"].model("depth"), (64, 128)) <= TOLERANCE


# --- the HF layout ---------------------------------------------------------------------------

# DPT's networks (Depth Anything V2's HF layout is checked against transformers in test_depth_anything.py)
ALL_NETWORKS = [(name, task) for name, variant in VARIANTS.items() for task in variant.tasks
                if variant.backbone.kind != DINOV2]


@pytest.mark.parametrize("name,task", ALL_NETWORKS)
def test_hf_layout_has_transformers_keys_and_shapes(name, task):
    spec = VARIANTS[name].model(task)
    with torch.device("meta"):
        reference = hf_model(spec, randomize=False)
        ours = DPT(spec)
    shapes = {key: tuple(value.shape) for key, value in to_hf_state_dict(ours).items()}
    assert shapes == {key: tuple(value.shape) for key, value in reference.state_dict().items()}


def _forward(model, size=(64, 96)):
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("structure", ["large", "base", "hybrid"])
@pytest.mark.parametrize("output", ["relative_inverse_depth", "logits"])
def test_round_trip_hf_ours_original_ours_is_bit_identical(structure, output):
    spec = tiny_model(structure, output)
    hf_state = hf_model(spec, seed=5).state_dict()
    from_hf = build_model(spec, weights=hf_state)
    original = to_original_state_dict(from_hf)
    assert checkpoint_layouts.detect_layout(original) == "original"
    from_original = build_model(spec, weights=original)
    assert torch.equal(_forward(from_hf), _forward(from_original))
    # and back to the HF layout: the very same tensors
    back = to_hf_state_dict(from_original)
    assert back.keys() == hf_state.keys()
    assert all(torch.equal(back[key], hf_state[key]) for key in hf_state)
    # ours -> ours
    again = build_model(spec, weights=from_original.state_dict())
    assert torch.equal(_forward(again), _forward(from_original))
