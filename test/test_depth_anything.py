"""Depth Anything V2: variants table, network, checkpoint layouts, pre-processing, engine, downstream.

The network is checked against transformers' DepthAnythingForDepthEstimation (a test-only
reference) on the same random weights: our model is exported to the hub layout, written as a hub
directory and read back by transformers' own ``from_pretrained``, so the layout is checked by the
loader that reads the hub files.  transformers resizes the position embedding to a target size
while the Depth Anything V2 reference code uses scale factors, so the two agree only at the trained
37 x 37 grid (518 x 518); the reference formula is checked on its own below, and transformers'
decoder (neck and head run any grid) is checked at odd, non-square grids with its embedding
resize replaced by that formula.
"""
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import transformers  # noqa: F401  (test-only reference, in requirements.txt: missing it must fail, not skip)

from dpt_ros.inference import InferenceEngine
from test_inference import ContractDepthNet, smooth_image
from dpt_ros.model import (
    DPT,
    VARIANTS,
    WeightsLayoutError,
    build_model,
    checkpoint_layouts,
    load_weights,
    to_hf_state_dict,
    to_original_state_dict,
)
from dpt_ros.model.backbone import resize_pos_embed_dinov2
from dpt_ros.model.testing import tiny_depth_anything
from dpt_ros.model.variants import DINOV2
from dpt_ros.resize_rules import DEPTH_ANYTHING_RESIZE, network_size
from support.transformers_reference import depth_anything_hf_config, transformers_depth_anything

TOLERANCE = 1e-5  # max |ours - transformers| / max |transformers|
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEPTH_ANYTHING = [name for name, variant in VARIANTS.items() if variant.backbone.kind == DINOV2]
OFFICIAL = [name for name in DEPTH_ANYTHING if name != "depth_anything_v2_tiny"]


# --- the variants table ------------------------------------------------------------------------

# github.com/DepthAnything/Depth-Anything-V2: README (model_configs, download table, licence) and
# metric_depth/README (max_depth 20 indoor / 80 outdoor, download table).
ENCODERS = {  # suffix: (hub size, timm model, width, blocks, heads, hooks, projections, features, licence)
    "vits": ("Small", "vit_small_patch14_dinov2", 384, 12, 6, (2, 5, 8, 11), (48, 96, 192, 384), 64,
             "Apache-2.0"),
    "vitb": ("Base", "vit_base_patch14_dinov2", 768, 12, 12, (2, 5, 8, 11), (96, 192, 384, 768), 128,
             "CC-BY-NC-4.0"),
    "vitl": ("Large", "vit_large_patch14_dinov2", 1024, 24, 16, (4, 11, 17, 23), (256, 512, 1024, 1024), 256,
             "CC-BY-NC-4.0"),
}
KINDS = {"": ("", None), "metric_hypersim_": ("Metric-Hypersim-", 20.0), "metric_vkitti_": ("Metric-VKITTI-", 80.0)}
# sha256 of depth_anything_v2_vits.pth as published (99 218 434 bytes); the others are not known here
SMALL_SHA256 = "715fade13be8f229f8a70cc02066f656f2423a59effd0579197bbf57860e1378"


def test_variants_table():
    expected_names = {f"depth_anything_v2_{kind}{suffix}" for kind in KINDS for suffix in ENCODERS}
    assert set(OFFICIAL) == expected_names
    for suffix, (size, timm_name, width, blocks, heads, hooks, channels, features, licence) in ENCODERS.items():
        for kind, (hub_kind, max_depth) in KINDS.items():
            name = f"depth_anything_v2_{kind}{suffix}"
            variant = VARIANTS[name]
            backbone, task = variant.backbone, variant.tasks["depth"]
            assert list(variant.tasks) == ["depth"]  # no segmentation model was published
            assert (backbone.kind, backbone.timm_name, backbone.embed_dim, backbone.depth, backbone.num_heads,
                    backbone.hooks, backbone.channels, backbone.patch_size, backbone.image_size) == (
                DINOV2, timm_name, width, blocks, heads, hooks, channels, 14, 518)
            assert (variant.features, variant.readout) == (features, "ignore")
            assert task.checkpoint_url == (f"https://huggingface.co/depth-anything/Depth-Anything-V2-{hub_kind}{size}"
                                           f"/resolve/main/{name}.pth")
            assert task.licence == licence
            assert task.sha256_prefix == (SMALL_SHA256 if name == "depth_anything_v2_vits" else None)
            assert (task.input_size, task.mean, task.std, task.resize) == (
                518, IMAGENET_MEAN, IMAGENET_STD, DEPTH_ANYTHING_RESIZE)
            assert task.output_kind == ("metric_depth" if max_depth else "relative_inverse_depth")
            assert (task.max_depth, task.depth_scale, task.depth_shift) == (max_depth, None, None)
    tiny = VARIANTS["depth_anything_v2_tiny"].tasks["depth"]
    assert tiny.checkpoint_url is None and tiny.licence is None and tiny.resize == DEPTH_ANYTHING_RESIZE


@pytest.mark.parametrize("name", OFFICIAL)
def test_timm_backbone_matches_the_spec(name):
    """timm's vit_*_patch14_dinov2 (pretrained=False) is built and checked against the spec
    (width, depth, heads, layer scale, patch 14, 37 x 37 + 1 position embedding)."""
    with torch.device("meta"):
        model = DPT(VARIANTS[name].model("depth"))
    vit = model.backbone.vit
    assert vit.pos_embed.shape == (1, 37 * 37 + 1, VARIANTS[name].backbone.embed_dim)
    assert tuple(vit.patch_embed.proj.kernel_size) == (14, 14)
    assert vit.blocks[0].ls1.gamma.shape == (VARIANTS[name].backbone.embed_dim,)


# --- the official checkpoint layout ----------------------------------------------------------

def reference_official_shapes(spec):
    """Key -> shape of a checkpoint saved by the reference code (depth_anything_v2/dpt.py
    DepthAnythingV2 with use_clstoken=False, dinov2.py DinoVisionTransformer with block_chunks=0),
    written out from its module structure, independently of our mapping."""
    backbone, features = spec.backbone, spec.features
    dim, grid = backbone.embed_dim, backbone.image_size // backbone.patch_size
    hidden = int(dim * backbone.mlp_ratio)  # 4 x dim in every published encoder
    shapes = {
        "pretrained.cls_token": (1, 1, dim),
        "pretrained.pos_embed": (1, grid * grid + 1, dim),
        "pretrained.mask_token": (1, dim),
        "pretrained.patch_embed.proj.weight": (dim, 3, 14, 14),
        "pretrained.patch_embed.proj.bias": (dim,),
        "pretrained.norm.weight": (dim,),
        "pretrained.norm.bias": (dim,),
    }
    for block in range(backbone.depth):
        prefix = f"pretrained.blocks.{block}."
        for name, shape in (("norm1.weight", (dim,)), ("norm1.bias", (dim,)), ("attn.qkv.weight", (3 * dim, dim)),
                            ("attn.qkv.bias", (3 * dim,)), ("attn.proj.weight", (dim, dim)), ("attn.proj.bias", (dim,)),
                            ("ls1.gamma", (dim,)), ("norm2.weight", (dim,)), ("norm2.bias", (dim,)),
                            ("mlp.fc1.weight", (hidden, dim)), ("mlp.fc1.bias", (hidden,)),
                            ("mlp.fc2.weight", (dim, hidden)), ("mlp.fc2.bias", (dim,)), ("ls2.gamma", (dim,))):
            shapes[prefix + name] = shape
    head = "depth_head."
    channels = backbone.channels
    for index, width in enumerate(channels):
        shapes[f"{head}projects.{index}.weight"] = (width, dim, 1, 1)
        shapes[f"{head}projects.{index}.bias"] = (width,)
        shapes[f"{head}scratch.layer{index + 1}_rn.weight"] = (features, width, 3, 3)
    for index, kernel in ((0, 4), (1, 2), (3, 3)):  # ConvTranspose k4s4, k2s2; Identity; Conv k3s2
        shapes[f"{head}resize_layers.{index}.weight"] = (channels[index], channels[index], kernel, kernel)
        shapes[f"{head}resize_layers.{index}.bias"] = (channels[index],)
    for index in range(1, 5):
        block = f"{head}scratch.refinenet{index}."
        shapes[block + "out_conv.weight"] = (features, features, 1, 1)
        shapes[block + "out_conv.bias"] = (features,)
        for unit in ("resConfUnit1", "resConfUnit2"):
            for conv in ("conv1", "conv2"):
                shapes[f"{block}{unit}.{conv}.weight"] = (features, features, 3, 3)
                shapes[f"{block}{unit}.{conv}.bias"] = (features,)
    for name, shape in (("output_conv1", (features // 2, features, 3, 3)),
                        ("output_conv2.0", (32, features // 2, 3, 3)), ("output_conv2.2", (1, 32, 1, 1))):
        shapes[f"{head}scratch.{name}.weight"] = shape
        shapes[f"{head}scratch.{name}.bias"] = (shape[0],)
    return shapes


# tensors in the official files: DINOv2 7 + 14 per block, head 64
OFFICIAL_COUNTS = {"vits": 7 + 14 * 12 + 64, "vitb": 7 + 14 * 12 + 64, "vitl": 7 + 14 * 24 + 64}


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_layout_has_the_published_keys_and_shapes(name):
    spec = VARIANTS[name].model("depth")
    with torch.device("meta"):
        exported = to_original_state_dict(DPT(spec))
    expected = reference_official_shapes(spec)
    assert len(expected) == OFFICIAL_COUNTS[name.rsplit("_", 1)[1]]
    assert {key: tuple(value.shape) for key, value in exported.items()} == expected


def random_official_checkpoint(spec, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = reference_official_shapes(spec)
    return {key: torch.randn(shape, generator=generator) * 0.1 for key, shape in shapes.items()}


@pytest.mark.parametrize("spec", [VARIANTS["depth_anything_v2_metric_hypersim_vits"].model("depth"),
                                  tiny_depth_anything()], ids=["metric_hypersim_vits", "tiny"])
def test_official_checkpoint_loads_strictly_and_round_trips(spec, tmp_path):
    """A .pth in the reference code's layout (keys and shapes written out above) loads into
    build_model from a file, every tensor lands somewhere (the export gives each back bit for bit),
    and the HF layout carries the same tensors: official -> ours -> HF -> ours -> official."""
    checkpoint = random_official_checkpoint(spec)
    path = tmp_path / "depth_anything_v2_checkpoint.pth"
    torch.save(checkpoint, path)
    model = build_model(spec, weights=str(path))
    exported = to_original_state_dict(model)
    assert exported.keys() == checkpoint.keys()
    assert all(torch.equal(exported[key], checkpoint[key]) for key in checkpoint)
    through_hf = build_model(spec, weights=to_hf_state_dict(model))
    again = to_original_state_dict(through_hf)
    assert all(torch.equal(again[key], checkpoint[key]) for key in checkpoint)
    assert checkpoint_layouts.detect_layout(checkpoint) == "original"
    assert checkpoint_layouts.detect_layout(to_hf_state_dict(model)) == "hf"


def _layout_error(model, state_dict):
    with pytest.raises(WeightsLayoutError) as info:
        load_weights(model, state_dict)
    return str(info.value)


def test_wrong_size_checkpoint_names_the_offending_keys():
    """A Base checkpoint given to a Small model: every mis-shaped tensor is named with its shapes."""
    small, base = (VARIANTS[name].model("depth") for name in ("depth_anything_v2_vits", "depth_anything_v2_vitb"))
    with torch.device("meta"):
        model = DPT(small)
    base_checkpoint = {key: torch.empty(shape, device="meta") for key, shape in reference_official_shapes(base).items()}
    message = _layout_error(model, base_checkpoint)
    # all but the three head tensors whose shapes do not depend on the width (32 -> 1 conv, 32 biases)
    assert ("236 shape mismatch: pretrained.mask_token: (1, 768) (expected (1, 384)), "
            "pretrained.cls_token: (1, 1, 768) (expected (1, 1, 384))") in message
    assert "missing" not in message and "unexpected" not in message
    # a Large checkpoint has 12 more blocks as well
    large = VARIANTS["depth_anything_v2_vitl"].model("depth")
    large_checkpoint = {key: torch.empty(shape, device="meta")
                        for key, shape in reference_official_shapes(large).items()}
    message = _layout_error(model, large_checkpoint)
    assert "168 unexpected: pretrained.blocks.12.norm1.weight" in message


@pytest.fixture(scope="module")
def tiny():
    spec = tiny_depth_anything()
    model = build_model(spec, seed=3)
    return spec, model, to_original_state_dict(model), to_hf_state_dict(model)


def test_official_layout_errors_name_keys(tiny):
    spec, model, original, hf = tiny
    broken = dict(original)
    del broken["depth_head.scratch.refinenet2.out_conv.weight"]
    broken["depth_head.scratch.output_conv2.4.weight"] = torch.zeros(1)
    broken["depth_head.projects.1.weight"] = torch.zeros(3, 3)
    message = _layout_error(model, broken)
    assert "1 missing: depth_head.scratch.refinenet2.out_conv.weight" in message
    assert "1 unexpected: depth_head.scratch.output_conv2.4.weight" in message
    assert "1 shape mismatch: depth_head.projects.1.weight: (3, 3) (expected (32, 64, 1, 1))" in message
    # a DPT checkpoint is no Depth Anything one
    message = _layout_error(model, to_original_state_dict(build_model("dpt_tiny")))
    assert "missing: pretrained.mask_token" in message and "unexpected: pretrained.model.cls_token" in message


# --- the HF layout -----------------------------------------------------------------------------

# transformers 5's names of the attention tensors -> the hub files' names (written out here, not
# taken from the module under test)
TRANSFORMERS5_TO_HUB = {".attention.q_proj.": ".attention.attention.query.",
                        ".attention.k_proj.": ".attention.attention.key.",
                        ".attention.v_proj.": ".attention.attention.value.",
                        ".attention.o_proj.": ".attention.output.dense."}


def hub_name(key):
    for old, new in TRANSFORMERS5_TO_HUB.items():
        key = key.replace(old, new)
    return key


@pytest.mark.parametrize("name", DEPTH_ANYTHING)
def test_hf_layout_has_transformers_keys_and_shapes(name):
    """Our export has the hub files' names (transformers 5 renames four of them when it loads a
    file; its in-memory model has q_proj/k_proj/v_proj/o_proj) and transformers' shapes."""
    from transformers import DepthAnythingForDepthEstimation

    spec = VARIANTS[name].model("depth")
    with torch.device("meta"):
        reference = DepthAnythingForDepthEstimation(depth_anything_hf_config(spec))
        ours = DPT(spec)
    expected = {hub_name(key): tuple(value.shape) for key, value in reference.state_dict().items()}
    assert any(".attention.q_proj." in key for key in reference.state_dict())
    assert {key: tuple(value.shape) for key, value in to_hf_state_dict(ours).items()} == expected


def test_transformers5_names_load_and_are_named_in_errors(tiny):
    """A state dict taken from a loaded transformers 5 model (q_proj/k_proj/v_proj/o_proj) loads
    like the hub file; errors name tensors the way the source does; a tensor under both names is
    refused."""
    spec, model, original, hf = tiny
    transformers5 = {}
    for key, tensor in hf.items():
        for old, new in TRANSFORMERS5_TO_HUB.items():
            key = key.replace(new, old)
        transformers5[key] = tensor
    assert "backbone.encoder.layer.1.attention.k_proj.bias" in transformers5
    loaded = build_model(spec, weights=transformers5)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    broken = dict(transformers5)
    del broken["backbone.encoder.layer.1.attention.k_proj.bias"]
    broken["backbone.encoder.layer.2.attention.o_proj.weight"] = torch.zeros(2, 2)
    message = _layout_error(model, broken)
    assert "1 missing: backbone.encoder.layer.1.attention.k_proj.bias" in message
    assert "1 shape mismatch: backbone.encoder.layer.2.attention.o_proj.weight: (2, 2) (expected (64, 64))" in message
    both = dict(hf, **{"backbone.encoder.layer.0.attention.q_proj.weight": hf[
        "backbone.encoder.layer.0.attention.attention.query.weight"]})
    message = _layout_error(model, both)
    assert "holds the same tensor twice" in message and "attention.q_proj.weight" in message


def _parity(spec, tmp_path, size=518, seed=0):
    """max |ours - transformers| / max |transformers| on one random input, transformers loading our
    export from a hub directory with from_pretrained."""
    ours = build_model(spec, seed=seed)
    reference = transformers_depth_anything(ours, tmp_path / "hub")
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = reference(pixel_values=x).predicted_depth
        got = ours(x)
    assert got.shape == expected.shape == (1, size, size)
    # the comparison means something only if the outputs are O(1) and not mostly clamped
    assert expected.abs().max() > 0.1 and (expected > 0).float().mean() > 0.3
    if spec.is_metric:  # sigmoid x max depth: metres inside (0, max_depth)
        assert 0 < expected.min() and expected.max() < spec.task.max_depth
    diff = ((got - expected).abs().max() / expected.abs().max()).item()
    print(f"{spec.name} {size}x{size}: max relative diff {diff:.3g} (max|ref| {expected.abs().max():.3g})")
    return diff


@pytest.mark.parametrize("name", ["depth_anything_v2_vits", "depth_anything_v2_metric_hypersim_vits"])
def test_small_parity_with_transformers_at_518(name, tmp_path):
    assert _parity(VARIANTS[name].model("depth"), tmp_path) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name", ["depth_anything_v2_vitb", "depth_anything_v2_metric_vkitti_vitb"])
def test_base_parity_with_transformers_at_518(name, tmp_path):
    assert _parity(VARIANTS[name].model("depth"), tmp_path) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name", ["depth_anything_v2_vitl", "depth_anything_v2_metric_hypersim_vitl"])
def test_large_structure_parity_with_transformers_at_518(name, tmp_path):
    """ViT-L's width, heads, projections (256/512/1024/1024) and 256 features, with 4 of its 24
    blocks: the full Large takes minutes per forward on a 2-core CPU."""
    spec = VARIANTS[name].model("depth").replace(backbone=dict(depth=4, hooks=(0, 1, 2, 3), timm_name=None))
    assert _parity(spec, tmp_path) <= TOLERANCE


@pytest.mark.parametrize("output", ["relative_inverse_depth", "metric_depth"])
def test_tiny_parity_with_transformers_at_the_trained_grid(output, tmp_path):
    """Batch of 3 at 70 x 70; the hub directory written for transformers loads into ours too."""
    spec = tiny_depth_anything(output)
    ours = build_model(spec, seed=1)
    reference = transformers_depth_anything(ours, tmp_path / "hub")
    from_hub_directory = build_model(spec, weights=str(tmp_path / "hub"))
    x = torch.randn(3, 3, 70, 70, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(pixel_values=x).predicted_depth
        assert (ours(x) - expected).abs().max() <= TOLERANCE * expected.abs().max()
        assert torch.equal(from_hub_directory(x), ours(x))


# --- the position embedding and odd, non-square grids ----------------------------------------

def reference_bicubic(table, scale_rows, scale_cols, rows, cols):
    """The DINOv2 reference's resize written out in numpy (float64): torch's bicubic (cubic
    convolution, A = -0.75, half-pixel centres, border indices clamped) with the source position
    of output pixel i at (i + 0.5) / scale - 0.5, ``scale`` the given scale factor."""
    def weights(t, a=-0.75):
        near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # noqa: E731  |x| <= 1
        far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # noqa: E731  1 < |x| < 2
        return [far(t + 1), near(t), near(1 - t), far(2 - t)]

    def resize_axis(values, scale, size, axis):
        length = values.shape[axis]
        out = []
        for index in range(size):
            source = (index + 0.5) / scale - 0.5
            base = math.floor(source)
            row = 0
            for offset, weight in zip(range(-1, 3), weights(source - base)):
                row = row + weight * np.take(values, min(max(base + offset, 0), length - 1), axis=axis)
            out.append(row)
        return np.stack(out, axis=axis)

    return resize_axis(resize_axis(table, scale_rows, rows, 0), scale_cols, cols, 1)


@pytest.mark.parametrize("grid", [(36, 49), (16, 21), (37, 49), (74, 80), (5, 3)])
def test_position_embedding_resize_follows_the_reference_formula(grid):
    """Scale factors (grid + 0.1) / 37, not a resize to the grid's size: checked against the
    formula above, and shown to differ from transformers' size-based resize off the 37 x 37 grid."""
    side, dim = 37, 6
    generator = torch.Generator().manual_seed(0)
    pos_embed = torch.randn(1, 1 + side * side, dim, generator=generator)
    resized = resize_pos_embed_dinov2(pos_embed, grid)
    rows, cols = grid
    assert resized.shape == (1, 1 + rows * cols, dim)
    assert torch.equal(resized[:, 0], pos_embed[:, 0])  # the class token's entry is kept
    table = pos_embed[0, 1:].double().numpy().reshape(side, side, dim)
    expected = reference_bicubic(table, (rows + 0.1) / side, (cols + 0.1) / side, rows, cols)
    np.testing.assert_allclose(resized[0, 1:].numpy().reshape(rows, cols, dim), expected, rtol=0, atol=2e-5)
    # transformers' rule: bicubic to the target size
    by_size = F.interpolate(pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2), size=grid,
                            mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
    assert (by_size - resized[:, 1:]).abs().max() > 1e-2


def test_position_embedding_is_unchanged_at_the_trained_grid():
    pos_embed = torch.randn(1, 1 + 37 * 37, 4)
    assert resize_pos_embed_dinov2(pos_embed, (37, 37)) is pos_embed


def _reference_interpolate_pos_encoding(embeddings, offset=0.1):
    """transformers' Dinov2Embeddings.interpolate_pos_encoding replaced by the reference formula
    (scale factors (grid + offset) / side), so its neck and head can be compared at any grid."""
    def interpolate(hidden, height, width):
        position = embeddings.position_embeddings
        side = int(round((position.shape[1] - 1) ** 0.5))
        rows, cols = height // embeddings.patch_size, width // embeddings.patch_size
        if (rows, cols) == (side, side):
            return position
        table = position[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
        table = F.interpolate(table, scale_factor=((rows + offset) / side, (cols + offset) / side), mode="bicubic",
                              align_corners=False, antialias=False)
        return torch.cat([position[:, :1], table.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)], dim=1)
    return interpolate


@pytest.mark.parametrize("size", [(98, 126), (126, 70), (154, 182), (42, 98)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("output", ["relative_inverse_depth", "metric_depth"])
def test_odd_non_square_grids_match_transformers_with_the_reference_embedding_resize(output, size, tmp_path):
    """Grids 7x9, 9x5, 11x13, 3x7: odd sides make the stride-2 map ceil(grid/2) high, so fusion
    must upsample to the next map's size (x2 would overshoot); transformers' neck does that."""
    spec = tiny_depth_anything(output)
    ours = build_model(spec, seed=2)
    reference = transformers_depth_anything(ours, tmp_path / "hub")
    embeddings = reference.backbone.embeddings
    embeddings.interpolate_pos_encoding = _reference_interpolate_pos_encoding(embeddings)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = reference(pixel_values=x).predicted_depth
        got = ours(x)
    assert got.shape == expected.shape == (2, *size)
    assert (got - expected).abs().max() <= TOLERANCE * expected.abs().max()


def test_input_sides_must_be_multiples_of_14():
    model = build_model(tiny_depth_anything())
    with pytest.raises(ValueError, match="multiples of 14"):
        model(torch.zeros(1, 3, 70, 72))


# --- pre-processing ----------------------------------------------------------------------------

@pytest.mark.parametrize("height, width, input_size, expected", [
    # 518 / 480 = 1.079 > 518 / 640: fit the height; 640 * 1.079 = 690.7 -> 49.33 * 14 -> 49 -> 686
    (480, 640, 518, (518, 686)),
    (640, 480, 518, (686, 518)),
    # 1920 * 518 / 1080 = 920.9 -> 65.78 -> 66 * 14 = 924
    (1080, 1920, 518, (518, 924)),
    # KITTI: 1242 * 518 / 375 = 1715.6 -> 122.54 -> 123 * 14 = 1722
    (375, 1242, 518, (518, 1722)),
    (518, 518, 518, (518, 518)),
    # small images are scaled up to the lower bound
    (100, 100, 518, (518, 518)),
    # ties round to even as numpy.round: 525 / 14 = 37.5 -> 38; 539 / 14 = 38.5 -> 38
    (518, 525, 518, (518, 532)),
    (518, 539, 518, (518, 532)),
    # input_size 224: 224 / 14 = 16 exactly; 640 * 224 / 480 = 298.7 -> 21.33 -> 21 * 14 = 294
    (480, 640, 224, (224, 294)),
    # input_size 256: 256 / 14 = 18.29 rounds to 252 < 256, so up: 19 * 14 = 266;
    # 640 * 256 / 480 = 341.3 -> 24.38 -> 24 * 14 = 336
    (480, 640, 256, (266, 336)),
    # 120 x 160 at 140: 140 / 14 = 10; 160 * 140 / 120 = 186.7 -> 13.33 -> 182
    (120, 160, 140, (140, 182)),
])
def test_network_size_lower_bound_rule(height, width, input_size, expected):
    assert network_size(height, width, input_size, DEPTH_ANYTHING_RESIZE) == expected


@pytest.fixture
def engine14():
    """An engine with Depth Anything V2's pre-processing around a stand-in that checks the
    forward contract (sides multiples of 14)."""
    return InferenceEngine(ContractDepthNet(multiple=14), device="cpu", depth_input_size=518,
                           depth_resize=DEPTH_ANYTHING_RESIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD)


@pytest.mark.parametrize("height, width", [(240, 320), (480, 640), (1080, 1920)])
def test_preprocess_matches_the_reference_image2tensor(engine14, height, width):
    """The reference: RGB / 255.0 (float64), cv2 INTER_CUBIC to the lower-bound size, ImageNet
    normalisation."""
    image = smooth_image(height, width)
    net_h, net_w = network_size(height, width, 518, DEPTH_ANYTHING_RESIZE)
    reference = cv2.resize(image / 255.0, (net_w, net_h), interpolation=cv2.INTER_CUBIC)
    reference = ((reference - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None]
    batch = engine14.preprocess(image, "depth").numpy()
    assert batch.shape == reference.shape == (1, 3, net_h, net_w)
    np.testing.assert_allclose(batch, reference, rtol=0, atol=5e-5)


@pytest.mark.parametrize("height, width", [(240, 320), (97, 203)])
def test_depth_comes_back_bilinearly_with_aligned_corners(engine14, height, width):
    """As infer_image: F.interpolate(depth, (h, w), mode="bilinear", align_corners=True)."""
    image = smooth_image(height, width, seed=1)
    batch = engine14.preprocess(image, "depth")
    with torch.no_grad():
        network_output = engine14._tasks["depth"].model(batch)
    expected = F.interpolate(network_output[:, None], (height, width), mode="bilinear", align_corners=True)[0, 0]
    depth = engine14.infer(image)[0].depth
    assert depth.shape == (height, width)
    np.testing.assert_allclose(depth, expected.numpy(), rtol=0, atol=1e-6)


# --- the engine end to end -----------------------------------------------------------------------

def test_engine_runs_the_metric_variant_and_its_output_is_metres():
    """from_variant on depth_anything_v2_metric_hypersim_vits (random weights, network size 140):
    depth at the image's size, in metres: 20 x sigmoid of the head's last convolution, bilinearly
    resized back."""
    engine = InferenceEngine.from_variant("depth_anything_v2_metric_hypersim_vits", weights=None, device="cpu",
                                          input_size=140)
    assert engine.depth_output_kind == "metric_depth"
    assert engine.network_size(120, 160, "depth") == (140, 182)
    model = engine._tasks["depth"].model
    captured = []
    handle = model.head.conv3.register_forward_hook(lambda module, inputs, output: captured.append(output))
    image = smooth_image(120, 160, seed=2)
    try:
        result = engine.infer(image)[0]
    finally:
        handle.remove()
    metres = 20.0 * torch.sigmoid(captured[0][:, 0].float())
    assert metres.shape == (1, 140, 182)
    expected = F.interpolate(metres[:, None], (120, 160), mode="bilinear", align_corners=True)[0, 0].numpy()
    assert result.depth.dtype == np.float32 and result.depth.shape == (120, 160)
    np.testing.assert_allclose(result.depth, expected, rtol=1e-6, atol=1e-5)
    assert 0 < result.depth.min() and result.depth.max() < 20.0
    assert result.depth.std() > 0.01  # varies across the image


def test_engine_runs_the_tiny_variant_in_batches_of_mixed_sizes():
    engine = InferenceEngine.from_variant("depth_anything_v2_tiny", device="cpu")
    images = [smooth_image(48, 64, seed=seed) for seed in range(3)] + [smooth_image(30, 90, seed=5)]
    results = engine.infer(images)
    assert [r.depth.shape for r in results] == [(48, 64)] * 3 + [(30, 90)]
    single = engine.infer(images[1])[0].depth
    np.testing.assert_allclose(results[1].depth, single, rtol=0, atol=1e-5)
    assert engine.network_size(48, 64, "depth") == (70, 98)  # lower bound 70, multiples of 14
    assert engine.network_size(30, 90, "depth") == (70, 210)


# --- downstream: model_config, node parameters, evaluate_bag, demo ----------------------------

def test_segmentation_for_a_depth_anything_variant_is_none_or_a_clear_error():
    from dpt_ros.model_config import ModelConfig, ModelLoadError, build_engine, segmentation_variant_for

    assert segmentation_variant_for("depth_anything_v2_metric_hypersim_vits") is None
    assert segmentation_variant_for("dpt_hybrid_kitti") == "dpt_hybrid"
    config = ModelConfig(variant="depth_anything_v2_tiny", weights="", allow_random_weights=True, device="cpu")
    assert build_engine(config, warn=lambda text: None).tasks == ("depth",)
    both = ModelConfig(variant="depth_anything_v2_tiny", weights="", allow_random_weights=True, device="cpu",
                       tasks=("depth", "segmentation"), segmentation_weights="")
    with pytest.raises(ModelLoadError, match="depth_anything_v2_tiny has no segmentation model.*"
                                             "set model.segmentation_variant"):
        build_engine(both, warn=lambda text: None)
    paired = ModelConfig(variant="depth_anything_v2_tiny", weights="", allow_random_weights=True, device="cpu",
                         tasks=("depth", "segmentation"), segmentation_variant="dpt_tiny", segmentation_weights="")
    engine = build_engine(paired, warn=lambda text: None)
    assert engine.tasks == ("depth", "segmentation")
    # each task keeps its own resize rule and normalisation: Depth Anything's for depth, DPT's for
    # segmentation
    image = smooth_image(70, 98)
    np.testing.assert_allclose(engine.preprocess(image, "depth")[0].permute(1, 2, 0).numpy(),
                               (image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD, rtol=0, atol=1e-5)
    image = smooth_image(96, 128)
    np.testing.assert_allclose(engine.preprocess(image, "segmentation")[0].permute(1, 2, 0).numpy(),
                               (image / 255.0 - 0.5) / 0.5, rtol=0, atol=1e-5)
    assert engine.network_size(48, 64, "depth") == (70, 98)
    assert engine.network_size(48, 64, "segmentation") == (96, 128)  # minimal rule: factor 2 (width) is nearer 1


def test_node_parameters_accept_every_depth_anything_variant():
    from dpt_ros import node_parameters

    for name in DEPTH_ANYTHING:
        assert node_parameters.validate("model.variant", name) is None
    assert "unknown variant" in node_parameters.validate("model.variant", "depth_anything_v3_vits")


@pytest.mark.parametrize("variant, preset, max_depth, alignment", [
    ("depth_anything_v2_metric_hypersim_vits", "hypersim", 20.0, "none"),
    ("depth_anything_v2_metric_vkitti_vitl", "vkitti", 80.0, "none"),
    ("depth_anything_v2_vitb", None, 80.0, "scale_shift_inverse_depth"),
    ("dpt_hybrid_nyu", "nyu", 10.0, "none"),
])
def test_evaluate_bag_takes_the_variants(variant, preset, max_depth, alignment, tmp_path):
    from dpt_ros.evaluation.cli import build_parser, config_from_args

    args = build_parser().parse_args([str(tmp_path / "in"), "--image-topic", "/image", "--variant", variant,
                                      "--weights", "auto", "--gt-depth-topic", "/depth"])
    config = config_from_args(args).resolved()
    assert (config.preset, config.max_depth, config.alignment) == (preset, max_depth, alignment)


def test_demo_knows_which_variants_give_metres():
    from dpt_ros.demo_run import parse_args, predicts_metric_depth

    assert predicts_metric_depth("depth_anything_v2_metric_hypersim_vits")
    assert predicts_metric_depth("dpt_hybrid_nyu")
    assert not predicts_metric_depth("depth_anything_v2_vits") and not predicts_metric_depth("dpt_hybrid")
    assert parse_args(["--variant", "depth_anything_v2_metric_vkitti_vits"]).variant == \
        "depth_anything_v2_metric_vkitti_vits"
    with pytest.raises(SystemExit):
        parse_args(["--variant", "depth_anything_v3"])
