"""Input sizes (non-square included), output kinds, reduced precision and the built model's state."""
import numpy as np
import pytest
import torch

from dpt_ros.depth import relative_to_metric
from dpt_ros.model import DPT, VARIANTS, build_model
from dpt_ros.model.backbone import resize_pos_embed
from dpt_ros.model.layers import DepthHead
from dpt_ros.model.testing import tiny_model

STRUCTURES = ["large", "base", "hybrid"]
SIZES = [(480, 640), (352, 1216), (32, 32), (96, 64), (64, 224)]


@pytest.fixture(scope="module", params=STRUCTURES)
def tiny_models(request):
    """A depth and a segmentation model of one structure, with random non-trivial weights."""
    depth = build_model(tiny_model(request.param), seed=4)
    segmentation = build_model(tiny_model(request.param, "logits"), seed=4)
    return depth, segmentation


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_any_multiple_of_32_returns_the_input_resolution(tiny_models, size):
    depth_model, segmentation_model = tiny_models
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        depth = depth_model(x)
        logits = segmentation_model(x)
    assert depth.shape == (2, *size)
    assert logits.shape == (2, 150, *size)
    assert torch.isfinite(depth).all() and torch.isfinite(logits).all()
    assert (depth >= 0).all() and depth.max() > 0


def test_batch_elements_are_independent(tiny_models):
    depth_model, _ = tiny_models
    x = torch.randn(3, 3, 96, 160)
    with torch.no_grad():
        batched = depth_model(x)
        single = torch.cat([depth_model(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-5)


@pytest.mark.parametrize("size", [(100, 128), (128, 100), (16, 32), (31, 64)])
def test_sides_not_multiple_of_32_are_rejected(size):
    model = build_model("dpt_tiny")
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 3, *size))


def test_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        build_model("dpt_tiny")(torch.zeros(1, 1, 64, 64))


def _bilinear_half_pixel(grid: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Independent reference: bilinear resampling with half-pixel centres, edges clamped
    (what F.interpolate(..., mode="bilinear", align_corners=False) computes)."""
    src_rows, src_cols = grid.shape[:2]

    def taps(out_size, in_size):
        pos = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, None)
        low = np.minimum(np.floor(pos).astype(int), in_size - 1)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, pos - low

    r0, r1, fr = taps(rows, src_rows)
    c0, c1, fc = taps(cols, src_cols)
    top = grid[r0][:, c0] * (1 - fc)[None, :, None] + grid[r0][:, c1] * fc[None, :, None]
    bottom = grid[r1][:, c0] * (1 - fc)[None, :, None] + grid[r1][:, c1] * fc[None, :, None]
    return top * (1 - fr)[:, None, None] + bottom * fr[:, None, None]


@pytest.mark.parametrize("grid", [(3, 5), (30, 40), (22, 76), (24, 24), (2, 2)])
def test_position_embedding_is_resampled_bilinearly_without_antialias(grid):
    pos_embed = torch.randn(1, 1 + 24 * 24, 8, dtype=torch.float64)
    resized = resize_pos_embed(pos_embed, grid)
    assert resized.shape == (1, 1 + grid[0] * grid[1], 8)
    assert torch.equal(resized[:, :1], pos_embed[:, :1])  # the readout token's is untouched
    table = pos_embed[0, 1:].reshape(24, 24, 8).numpy()
    expected = _bilinear_half_pixel(table, *grid).reshape(-1, 8)
    np.testing.assert_allclose(resized[0, 1:].numpy(), expected, rtol=0, atol=1e-12)


def test_metric_variant_converts_the_network_output():
    relative_spec = tiny_model("hybrid")
    metric_spec = tiny_model("hybrid", "metric_depth")
    relative = build_model(relative_spec, seed=6)
    metric = build_model(metric_spec, weights=relative.state_dict())
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        inverse = relative(x)
        metres = metric(x)
    assert metres.dtype == torch.float32
    torch.testing.assert_close(
        metres, relative_to_metric(inverse, metric_spec.task.depth_scale, metric_spec.task.depth_shift), rtol=0, atol=0
    )
    assert (metres > 0).all() and (metres <= 1 / metric_spec.task.depth_shift + 1e-3).all()


def test_depth_head_clamps_negative_depth():
    head = DepthHead(16)
    with torch.no_grad():
        head.conv3.bias.fill_(-1e3)
        assert not head(torch.randn(1, 16, 8, 8)).any()
        head.conv3.bias.fill_(1e3)
        assert (head(torch.randn(1, 16, 8, 8)) > 0).all()


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize(
    "dtype,bound", [(torch.float16, 1e-2), (torch.bfloat16, 6e-2)], ids=["float16", "bfloat16"]
)
@pytest.mark.parametrize("mode", ["cast", "autocast"])
def test_reduced_precision_stays_close_to_float32(structure, dtype, bound, mode):
    for output in ("relative_inverse_depth", "logits"):
        spec = tiny_model(structure, output)
        model = build_model(spec, seed=7)
        x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            reference = model(x)
            if mode == "cast":
                low = build_model(spec, weights=model.state_dict(), dtype=dtype)
                assert next(low.parameters()).dtype == dtype
                result = low(x.to(dtype))
                assert result.dtype == dtype
            else:
                with torch.autocast("cpu", dtype=dtype):
                    result = model(x)
        result = result.float()
        assert not torch.isnan(result).any()
        relative_error = ((result - reference).abs().max() / reference.abs().max()).item()
        assert relative_error <= bound, f"{spec.name} {dtype} {mode}: {relative_error:.3g}"


def test_built_model_is_in_eval_mode_without_gradients():
    for weights in (None, build_model("dpt_tiny", "segmentation").state_dict()):
        model = build_model("dpt_tiny", "segmentation", weights)
        assert not model.training and not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
        out = model(torch.randn(1, 3, 64, 64))  # no torch.no_grad(): still no graph
        assert not out.requires_grad and out.grad_fn is None
        assert all(p.device.type == "cpu" for p in model.parameters())


def test_segmentation_variant_keeps_the_auxiliary_head():
    model = build_model("dpt_tiny", "segmentation")
    assert model.aux_head.classifier.out_channels == 150
    assert not hasattr(build_model("dpt_tiny", "depth"), "aux_head")


@pytest.mark.slow
def test_full_size_hybrid_at_kitti_resolution():
    model = build_model("dpt_hybrid_kitti", "depth", seed=8)
    height, width = VARIANTS["dpt_hybrid_kitti"].tasks["depth"].input_size
    assert (height, width) == (352, 1216)
    with torch.no_grad():
        metres = model(torch.randn(1, 3, height, width))
    assert metres.shape == (1, height, width)
    assert torch.isfinite(metres).all() and (metres > 0).all()


@pytest.mark.parametrize("structure", STRUCTURES)
def test_random_weights_are_deterministic_and_informative(structure):
    for output in ("relative_inverse_depth", "logits"):
        spec = tiny_model(structure, output)
        model = build_model(spec)
        for name, tensor in model.state_dict().items():  # every tensor set (built from empty storage)
            assert torch.isfinite(tensor.float()).all() and tensor.any(), name
        x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = model(x)
            assert torch.equal(out, build_model(spec)(x))
            assert not torch.equal(out, build_model(spec, seed=1)(x))
        if output == "logits":
            assert len(out.argmax(1).unique()) > 1
        else:  # varies across the image, mostly not clamped by the final ReLU
            assert out.std() > 1e-3 and (out > 0).float().mean() > 0.5


@pytest.mark.parametrize("name", ["dpt_large", "dpt_hybrid", "dpt_base"])
def test_normalization_epsilons_are_timms(name):
    """LayerNorm 1e-6 (the HF hub configs say 1e-12, which is not what DPT was trained with);
    the hybrid's GroupNorm 1e-5 and weight-standardized convolutions 1e-8."""
    from timm.layers import StdConv2dSame

    with torch.device("meta"):
        model = DPT(VARIANTS[name].model("depth"))
    modules = list(model.modules())
    layer_norms = [m.eps for m in modules if isinstance(m, torch.nn.LayerNorm)]
    assert layer_norms and set(layer_norms) == {1e-6}
    if name == "dpt_hybrid":
        assert {m.eps for m in modules if isinstance(m, torch.nn.GroupNorm)} == {1e-5}
        assert {m.eps for m in modules if isinstance(m, StdConv2dSame)} == {1e-8}
