"""Checkpoint layouts: the original release key sets, loading between layouts, load_weights errors.

(The HF hub layout is checked against transformers itself in test_model_parity.py.)
"""
import re

import pytest
import timm
import torch

from dpt_ros.model import (
    DPT,
    VARIANTS,
    WeightsLayoutError,
    WeightsNotFoundError,
    build_model,
    load_weights,
    to_hf_state_dict,
    to_original_state_dict,
)
from dpt_ros.model.errors import WeightsError
from dpt_ros.model.testing import tiny_model
from dpt_ros.model.variants import DINOV2, HYBRID, RELEASE_URL

# The official release files (github.com/isl-org/DPT, release 1_0): variant, task -> file name.
RELEASED = {
    ("dpt_large", "depth"): "dpt_large-midas-2f21e586.pt",
    ("dpt_large", "segmentation"): "dpt_large-ade20k-b12dca68.pt",
    ("dpt_hybrid", "depth"): "dpt_hybrid-midas-501f0c75.pt",
    ("dpt_hybrid", "segmentation"): "dpt_hybrid-ade20k-53898607.pt",
    ("dpt_hybrid_kitti", "depth"): "dpt_hybrid_kitti-cb926ef4.pt",
    ("dpt_hybrid_nyu", "depth"): "dpt_hybrid_nyu-2ce69ec7.pt",
}


def _shapes(state_dict):
    return {key: tuple(value.shape) for key, value in state_dict.items()}


def _meta_model(spec):
    with torch.device("meta"):
        return DPT(spec)


def reference_original_shapes(spec):
    """Key -> shape of a checkpoint saved by the reference implementation (isl-org/DPT:
    dpt/models.py, dpt/vit.py, dpt/blocks.py), written out independently of our mapping."""
    backbone = spec.backbone
    with torch.device("meta"):
        timm_model = timm.create_model(backbone.timm_name, pretrained=False)  # with its classifier
    shapes = {f"pretrained.model.{k}": tuple(v.shape) for k, v in timm_model.state_dict().items()}
    dim, features, channels = backbone.embed_dim, spec.features, backbone.channels
    for index in range(4):
        if backbone.kind == HYBRID and index < 2:
            continue  # act_postprocess1/2 are nn.Identity in the hybrid
        post = f"pretrained.act_postprocess{index + 1}"
        if spec.readout == "project":  # ProjectReadout: Sequential(Linear(2D, D), GELU)
            shapes[f"{post}.0.project.0.weight"] = (dim, 2 * dim)
            shapes[f"{post}.0.project.0.bias"] = (dim,)
        shapes[f"{post}.3.weight"] = (channels[index], dim, 1, 1)  # after Transpose, Unflatten
        shapes[f"{post}.3.bias"] = (channels[index],)
        if index in (0, 1):  # ConvTranspose2d k4s4 / k2s2
            kernel = 4 if index == 0 else 2
            shapes[f"{post}.4.weight"] = (channels[index], channels[index], kernel, kernel)
            shapes[f"{post}.4.bias"] = (channels[index],)
        if index == 3:  # Conv2d 3x3 stride 2
            shapes[f"{post}.4.weight"] = (channels[index], channels[index], 3, 3)
            shapes[f"{post}.4.bias"] = (channels[index],)
    for index in range(4):
        shapes[f"scratch.layer{index + 1}_rn.weight"] = (features, channels[index], 3, 3)

    def batch_norm(prefix, width):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (width,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    use_bn = spec.is_segmentation
    for index in range(1, 5):
        block = f"scratch.refinenet{index}"
        shapes[f"{block}.out_conv.weight"] = (features, features, 1, 1)
        shapes[f"{block}.out_conv.bias"] = (features,)
        for unit in ("resConfUnit1", "resConfUnit2"):
            for conv in (1, 2):
                shapes[f"{block}.{unit}.conv{conv}.weight"] = (features, features, 3, 3)
                if use_bn:
                    batch_norm(f"{block}.{unit}.bn{conv}", features)
                else:
                    shapes[f"{block}.{unit}.conv{conv}.bias"] = (features,)
    if spec.is_segmentation:
        for prefix in ("scratch.output_conv", "auxlayer"):
            shapes[f"{prefix}.0.weight"] = (features, features, 3, 3)
            batch_norm(f"{prefix}.1", features)
            shapes[f"{prefix}.4.weight"] = (spec.task.num_classes, features, 1, 1)
            shapes[f"{prefix}.4.bias"] = (spec.task.num_classes,)
    else:
        head = "scratch.output_conv"
        for index, shape in ((0, (features // 2, features, 3, 3)), (2, (32, features // 2, 3, 3)), (4, (1, 32, 1, 1))):
            shapes[f"{head}.{index}.weight"] = shape
            shapes[f"{head}.{index}.bias"] = (shape[0],)
    return shapes


# Tensor counts of the released files as the reference code saves them (the DPT-Large depth
# file is known to hold 368).
EXPECTED_ORIGINAL_COUNTS = {
    ("dpt_large", "depth"): 368,
    ("dpt_large", "segmentation"): 442,
    ("dpt_hybrid", "depth"): 368,
    ("dpt_hybrid", "segmentation"): 442,
    ("dpt_hybrid_kitti", "depth"): 368,
    ("dpt_hybrid_nyu", "depth"): 368,
    ("dpt_base", "depth"): 224,
    ("dpt_base", "segmentation"): 298,
}


@pytest.mark.parametrize("name,task", list(EXPECTED_ORIGINAL_COUNTS))
def test_original_layout_has_the_published_keys_and_shapes(name, task):
    spec = VARIANTS[name].model(task)
    exported = to_original_state_dict(_meta_model(spec))
    expected = reference_original_shapes(spec)
    assert len(expected) == EXPECTED_ORIGINAL_COUNTS[name, task]
    assert _shapes(exported) == expected


INPUT_SIZES = {  # one side: square; the metric variants ran at (height, width)
    ("dpt_large", "depth"): 384,
    ("dpt_large", "segmentation"): 480,
    ("dpt_hybrid", "depth"): 384,
    ("dpt_hybrid", "segmentation"): 480,
    ("dpt_hybrid_kitti", "depth"): (352, 1216),
    ("dpt_hybrid_nyu", "depth"): (480, 640),
    ("dpt_base", "depth"): 384,
    ("dpt_base", "segmentation"): 480,
    ("dpt_tiny", "depth"): 128,
    ("dpt_tiny", "segmentation"): 128,
}


def test_variants_table():
    """The DPT rows (Depth Anything V2's are checked in test_depth_anything.py)."""
    tasks = {(name, task): spec for name, variant in VARIANTS.items() for task, spec in variant.tasks.items()
             if variant.backbone.kind != DINOV2}
    assert {key: spec.input_size for key, spec in tasks.items()} == INPUT_SIZES
    assert {key: spec.checkpoint_file for key, spec in tasks.items() if spec.checkpoint_file} == RELEASED
    for spec in tasks.values():
        assert spec.mean == spec.std == (0.5, 0.5, 0.5)
        if spec.checkpoint_file is None:
            assert spec.checkpoint_url is None and spec.sha256_prefix is None
            continue
        assert spec.checkpoint_file.endswith(f"-{spec.sha256_prefix}.pt")
        assert re.fullmatch(r"[0-9a-f]{8}", spec.sha256_prefix)
        assert spec.checkpoint_url == RELEASE_URL + spec.checkpoint_file
        assert spec.checkpoint_url.startswith("https://github.com/isl-org/DPT/releases/download/1_0/")
        assert spec.licence == "MIT"  # github.com/isl-org/DPT LICENSE
    kinds = {key: (spec.output_kind, spec.num_classes, spec.depth_scale, spec.depth_shift)
             for key, spec in tasks.items()}
    assert kinds.pop(("dpt_hybrid_kitti", "depth")) == ("metric_depth", None, 0.00006016, 0.00579)
    assert kinds.pop(("dpt_hybrid_nyu", "depth")) == ("metric_depth", None, 0.000305, 0.1378)
    for (name, task), kind in kinds.items():
        assert kind == (("relative_inverse_depth", None) if task == "depth" else ("logits", 150)) + (None, None)


# --- round trips ---------------------------------------------------------------------------


def _forward(model, size=(64, 96)):
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model(x)


def test_load_weights_into_existing_model_copies():
    spec = tiny_model("large")
    source = build_model(spec, seed=9)
    target = build_model(spec)
    assert not torch.equal(_forward(source), _forward(target))
    load_weights(target, to_original_state_dict(source))
    assert torch.equal(_forward(source), _forward(target))
    assert all(not p.requires_grad for p in target.parameters())


def test_weights_from_files_in_each_layout(tmp_path):
    """Paths go through weights_source.read_state_dict: a release-style .pt, an HF hub
    directory (model.safetensors) and a .pt of our own layout all load to the same network."""
    from safetensors.torch import save_file

    spec = tiny_model("hybrid", "logits")
    source = build_model(spec, seed=11)
    torch.save(to_original_state_dict(source), tmp_path / "dpt_tiny-ade20k-00000000.pt")
    (tmp_path / "hub").mkdir()
    save_file({k: v.contiguous() for k, v in to_hf_state_dict(source).items()}, tmp_path / "hub" / "model.safetensors")
    torch.save(source.state_dict(), tmp_path / "ours.pt")
    expected = _forward(source)
    for path in (tmp_path / "dpt_tiny-ade20k-00000000.pt", tmp_path / "hub", tmp_path / "ours.pt"):
        assert torch.equal(_forward(build_model(spec, weights=str(path))), expected), path
        target = build_model(spec)
        load_weights(target, path)
        assert torch.equal(_forward(target), expected), path


def test_original_export_zero_fills_the_unused_classifier():
    original = to_original_state_dict(build_model("dpt_tiny", "depth"))
    assert original["pretrained.model.head.weight"].shape == (1000, 64)
    assert not original["pretrained.model.head.weight"].any()


def test_missing_batch_norm_counters_are_tolerated():
    spec = tiny_model("large", "logits")
    model = build_model(spec, seed=2)
    original = {k: v for k, v in to_original_state_dict(model).items() if not k.endswith("num_batches_tracked")}
    loaded = build_model(spec, weights=original)
    assert torch.equal(_forward(loaded), _forward(model))


# --- errors ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    spec = tiny_model("hybrid", "logits")
    model = build_model(spec, seed=1)
    return spec, model, to_original_state_dict(model), to_hf_state_dict(model)


def _layout_error(model, state_dict):
    with pytest.raises(WeightsLayoutError) as info:
        load_weights(model, state_dict)
    assert isinstance(info.value, WeightsError)
    return str(info.value)


def test_missing_key_is_named(tiny):
    spec, model, original, hf = tiny
    broken = dict(original)
    del broken["scratch.refinenet2.out_conv.weight"]
    message = _layout_error(model, broken)
    assert "1 missing: scratch.refinenet2.out_conv.weight" in message
    assert "unexpected" not in message


def test_missing_split_qkv_key_is_named_in_hf_terms(tiny):
    spec, model, original, hf = tiny
    broken = dict(hf)
    del broken["dpt.encoder.layer.1.attention.attention.key.bias"]
    assert "1 missing: dpt.encoder.layer.1.attention.attention.key.bias" in _layout_error(model, broken)


def test_many_missing_keys_are_counted(tiny):
    spec, model, original, hf = tiny
    broken = {k: v for k, v in original.items() if not k.startswith("scratch.")}
    message = _layout_error(model, broken)
    count = sum(1 for k in original if k.startswith("scratch.") and not k.endswith("num_batches_tracked"))
    assert f"{count} missing: scratch." in message
    assert f"(+{count - 5} more)" in message


def test_unexpected_key_is_named(tiny):
    spec, model, original, hf = tiny
    broken = dict(original, **{"scratch.refinenet5.out_conv.weight": torch.zeros(1)})
    message = _layout_error(model, broken)
    assert "1 unexpected: scratch.refinenet5.out_conv.weight" in message
    assert "missing" not in message


def test_shape_mismatch_is_named(tiny):
    spec, model, original, hf = tiny
    broken = dict(original)
    broken["scratch.layer3_rn.weight"] = torch.zeros(3, 3)
    message = _layout_error(model, broken)
    assert "1 shape mismatch: scratch.layer3_rn.weight: (3, 3) (expected (32, 64, 3, 3))" in message


def test_wrong_variant_is_a_layout_error(tiny):
    spec, model, original, hf = tiny
    message = _layout_error(build_model("dpt_tiny", "segmentation"), original)  # hybrid weights, ViT model
    assert "missing" in message and "unexpected" in message


def test_unknown_and_mixed_layouts(tiny):
    spec, model, original, hf = tiny
    message = _layout_error(model, {"encoder.weight": torch.zeros(1), "decoder.bias": torch.zeros(1)})
    assert "no known DPT layout" in message and "encoder.weight" in message
    mixed = dict(original, **{"neck.convs.0.weight": torch.zeros(1)})
    assert "mixes the original and hf layouts" in _layout_error(model, mixed)
    assert "no known DPT layout" in _layout_error(model, {})


def test_auto_weights_need_an_official_checkpoint():
    for name, task in (("dpt_base", "depth"), ("dpt_base", "segmentation"), ("dpt_tiny", "depth")):
        with pytest.raises(WeightsNotFoundError, match=f"variant '{name}' has no official {task} checkpoint"):
            build_model(name, task, weights="auto")


def test_unknown_variant_or_task():
    with pytest.raises(ValueError, match="unknown DPT variant 'dpt_huge'"):
        build_model("dpt_huge")
    with pytest.raises(ValueError, match="'dpt_hybrid_kitti' has no segmentation network"):
        build_model("dpt_hybrid_kitti", "segmentation")
