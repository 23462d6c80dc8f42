"""InferenceEngine: resize rule, pre/post-processing, batching, precision, validation, devices."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dpt_ros.inference import InferenceEngine, resolve_device
from dpt_ros.resize_rules import DPT_RESIZE, network_size

ADE20K_CLASSES = 150


class ContractDepthNet(torch.nn.Module):
    """Small stand-in following the depth forward contract: (B,3,H,W) -> (B,H,W), H and W
    multiples of ``multiple`` (32 for DPT, 14 for Depth Anything V2).

    Records the input shape of every forward so tests can count batches.
    """

    def __init__(self, seed=0, multiple=32):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(8, 1, 3, padding=1)
        )
        self.multiple = multiple
        self.calls = []

    def forward(self, x):
        assert x.shape[-2] % self.multiple == 0 and x.shape[-1] % self.multiple == 0
        self.calls.append(tuple(x.shape))
        return self.body(x)[:, 0]


class ContractSegmentationNet(torch.nn.Module):
    """(B,3,H,W) -> (B,150,H,W) logits."""

    def __init__(self, seed=1):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, ADE20K_CLASSES, 1)
        )
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return self.body(x)


def random_image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth_image(height, width, seed=0):
    """A natural-looking image (smooth gradients + blobs), so resizes are well conditioned."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


@pytest.fixture
def engine():
    return InferenceEngine(
        ContractDepthNet(), ContractSegmentationNet(), device="cpu",
        depth_input_size=384, segmentation_input_size=480,
    )


# ---------------------------------------------------------------------------------------------
# Resize rule
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "height, width, size, expected",
    [
        # 640x480 at 384: factors 0.8 (height) and 0.6 (width); 0.8 is closer to 1 -> 384 x 512.
        (480, 640, 384, (384, 512)),
        # portrait: width factor 0.8 wins -> 512 x 384
        (640, 480, 384, (512, 384)),
        # 1920x1080: factors 0.356/0.2 -> height; 1920*0.3556 = 682.7 -> 21.33*32 -> 672
        (1080, 1920, 384, (384, 672)),
        # KITTI 1216x352: factor 1.091 (height) is closer to 1 than 0.316; 1326.5 -> 41.45 -> 1312
        (352, 1216, 384, (384, 1312)),
        # segmentation at 480: 1920*0.4444 = 853.3 -> 26.67 -> 864; 1216*1.3636 = 1658.2 -> 1664
        (480, 640, 480, (480, 640)),
        (1080, 1920, 480, (480, 864)),
        (352, 1216, 480, (480, 1664)),
        # ties round to even like numpy.round in the reference: 400/32 = 12.5 -> 12; 432 -> 13.5 -> 14
        (384, 400, 384, (384, 384)),
        (384, 432, 384, (384, 448)),
        # tiny images are scaled up; a side never drops below 32
        (8, 8, 384, (384, 384)),
        (10, 1, 384, (384, 32)),
        (1, 1000, 384, (32, 384)),
        (1, 1, 128, (128, 128)),
    ],
)
def test_network_size_rule(height, width, size, expected):
    assert network_size(height, width, size) == expected


@pytest.mark.parametrize(
    "height, width, size, expected",
    [
        # KITTI network size 352 x 1216: a KITTI frame maps to itself
        (352, 1216, (352, 1216), (352, 1216)),
        # 375x1242 raw KITTI: factors 0.9387 (height) / 0.9791 (width) -> width;
        # 375*0.9791 = 367.2 -> 11.47 -> 352
        (375, 1242, (352, 1216), (352, 1216)),
        # 480x640 at 352x1216: factors 0.733 (height) / 1.9 (width) -> height: 352 x 469.3,
        # 469.3 / 32 = 14.67 -> 480
        (480, 640, (352, 1216), (352, 480)),
    ],
)
def test_network_size_rule_non_square_target(height, width, size, expected):
    assert network_size(height, width, size) == expected


def test_network_size_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        network_size(0, 10, 384)
    with pytest.raises(ValueError, match="at least 32"):
        network_size(10, 10, 16)
    with pytest.raises(ValueError, match=r"int or \(height, width\)"):
        network_size(10, 10, (384, 384, 3))


def test_engine_network_size_per_task(engine):
    assert engine.network_size(480, 640, "depth") == (384, 512)
    assert engine.network_size(480, 640, "segmentation") == (480, 640)
    with pytest.raises(ValueError, match="not enabled"):
        InferenceEngine(ContractDepthNet(), device="cpu").network_size(480, 640, "segmentation")


# ---------------------------------------------------------------------------------------------
# Pre-processing
# ---------------------------------------------------------------------------------------------
def numpy_normalize(image_rgb, mean, std):
    x = image_rgb.astype(np.float64) / 255.0
    x = (x - np.asarray(mean)) / np.asarray(std)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def test_preprocess_normalization_matches_numpy_reference():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    engine = InferenceEngine(ContractDepthNet(), device="cpu", mean=mean, std=std)
    image = random_image(384, 512)  # already at the network size: no resize involved
    batch = engine.preprocess(image, "depth")
    assert batch.dtype == torch.float32 and batch.shape == (1, 3, 384, 512)
    np.testing.assert_allclose(batch.numpy(), numpy_normalize(image, mean, std), rtol=0, atol=2e-6)
    # BGR input is swapped to RGB before normalization.
    bgr = engine.preprocess(image[..., ::-1], "depth", bgr=True)
    assert torch.equal(bgr, batch)


@pytest.mark.parametrize("height, width", [(240, 320), (1080, 1920)])
def test_preprocess_resize_matches_reference_pipeline(height, width):
    """The DPT reference resizes the float image with cv2 INTER_CUBIC, then normalizes."""
    engine = InferenceEngine(ContractDepthNet(), device="cpu")
    image = smooth_image(height, width)
    net_h, net_w = engine.network_size(height, width, "depth")
    reference = cv2.resize(image.astype(np.float32) / 255.0, (net_w, net_h), interpolation=cv2.INTER_CUBIC)
    reference = ((reference - 0.5) / 0.5).transpose(2, 0, 1)[None]
    batch = engine.preprocess(image, "depth").numpy()
    assert batch.shape == reference.shape
    np.testing.assert_allclose(batch, reference, rtol=0, atol=1e-5)


def test_preprocess_rejects_mixed_network_sizes(engine):
    with pytest.raises(ValueError, match="different network sizes"):
        engine.preprocess([random_image(480, 640), random_image(352, 1216)], "depth")


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("height, width", [(480, 640), (352, 1216), (1080, 1920)])
def test_outputs_at_input_resolution(engine, height, width):
    (result,) = engine.infer(smooth_image(height, width))
    assert result.depth.shape == (height, width) and result.depth.dtype == np.float32
    assert result.labels.shape == (height, width) and result.labels.dtype == np.uint8
    assert np.isfinite(result.depth).all()
    assert result.labels.max() < ADE20K_CLASSES
    assert set(result.timings_ms) == {"preprocess", "inference", "postprocess"}
    assert all(value >= 0 for value in result.timings_ms.values())


@pytest.mark.parametrize("height, width, net_size", [(480, 640, (384, 512)), (384, 512, (384, 512))])
def test_depth_is_bicubic_resize_of_model_output(engine, height, width, net_size):
    image = smooth_image(height, width)
    (result,) = engine.infer(image)
    with torch.inference_mode():
        raw = engine._tasks["depth"].model(engine.preprocess(image, "depth"))
    assert raw.shape == (1, *net_size)
    expected = F.interpolate(raw[:, None], size=(height, width), mode="bicubic", align_corners=False)
    np.testing.assert_array_equal(result.depth, expected[0, 0].numpy())


@pytest.mark.parametrize(
    "height, width, net_size", [(352, 1216, (480, 1664)), (480, 640, (480, 640)), (120, 160, (352, 480))]
)
def test_labels_are_argmax_of_bilinearly_resized_logits(engine, height, width, net_size):
    image = smooth_image(height, width)
    (result,) = engine.infer(image)
    with torch.inference_mode():
        logits = engine._tasks["segmentation"].model(engine.preprocess(image, "segmentation"))
    assert logits.shape == (1, ADE20K_CLASSES, *net_size)
    # the reference resizes NCHW logits: one arithmetic for every class plane
    resized = F.interpolate(logits.contiguous(), size=(height, width), mode="bilinear", align_corners=False)
    expected = resized.argmax(dim=1)[0].numpy()
    np.testing.assert_array_equal(result.labels, expected)
    assert result.labels.min() >= 0 and result.labels.max() <= 149
    assert len(np.unique(result.labels)) > 1  # a constant map would make the check vacuous


def test_upsampled_labels_through_the_engine_equal_the_reference(monkeypatch):
    """A network smaller than the image (dpt_tiny, or a small input_size): the engine's labels
    come from dpt_ros.bilinear_argmax's host path and equal the plain resize + argmax."""
    import dpt_ros.bilinear_argmax as bilinear_argmax

    engine = InferenceEngine.from_variant("dpt_tiny", tasks="segmentation", device="cpu", input_size=64)
    image = smooth_image(150, 200, seed=5)
    with torch.inference_mode():
        logits = engine._tasks["segmentation"].model(engine.preprocess(image, "segmentation"))
    assert logits.shape[-2:] == (64, 96)
    expected = bilinear_argmax.plain_resized_argmax(logits, (150, 200))[0].numpy()
    monkeypatch.setattr(bilinear_argmax, "plain_resized_argmax", None)  # the host path must not need it
    (result,) = engine.infer(image)
    np.testing.assert_array_equal(result.labels, expected)
    assert len(np.unique(expected)) > 1


def test_bgr_input_gives_identical_results(engine):
    rgb = smooth_image(480, 640, seed=4)
    (from_rgb,) = engine.infer(rgb)
    (from_bgr,) = engine.infer(np.ascontiguousarray(rgb[..., ::-1]), bgr=True)
    (from_bgr_view,) = engine.infer(rgb[..., ::-1], bgr=True)  # negative-stride view
    for other in (from_bgr, from_bgr_view):
        np.testing.assert_array_equal(other.depth, from_rgb.depth)
        np.testing.assert_array_equal(other.labels, from_rgb.labels)
    # and the flag matters: the same array read as BGR gives a different depth
    (swapped,) = engine.infer(rgb, bgr=True)
    assert not np.allclose(swapped.depth, from_rgb.depth)


def test_batch_equals_single_images_and_groups_by_network_size(engine):
    images = [
        smooth_image(480, 640, seed=1),
        smooth_image(480, 640, seed=2),
        smooth_image(600, 800, seed=3),  # another input size, same 384x512 depth network size
        smooth_image(352, 1216, seed=4),
    ]
    depth_model = engine._tasks["depth"].model
    depth_model.calls.clear()
    batched = engine.infer(images)
    # one depth forward per network size: three images at 384x512, one at 384x1312
    assert sorted(depth_model.calls) == [(1, 3, 384, 1312), (3, 3, 384, 512)]
    for image, together in zip(images, batched):
        (alone,) = engine.infer(image)
        assert together.depth.shape == image.shape[:2]
        np.testing.assert_allclose(together.depth, alone.depth, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(together.labels, alone.labels)


# ---------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision, tolerance", [("bf16", 0.02), ("fp16", 0.005)])
def test_reduced_precision_close_to_fp32(precision, tolerance):
    models = (ContractDepthNet(), ContractSegmentationNet())
    reference = InferenceEngine(*models, device="cpu")
    reduced = InferenceEngine(*models, device="cpu", precision=precision)
    assert reduced.precision == precision
    image = smooth_image(240, 320)
    (expected,) = reference.infer(image)
    (actual,) = reduced.infer(image)
    assert actual.depth.dtype == np.float32 and np.isfinite(actual.depth).all()
    relative = np.abs(actual.depth - expected.depth).mean() / np.abs(expected.depth).mean()
    assert relative < tolerance
    assert relative > 0  # autocast really ran in reduced precision
    assert (actual.labels == expected.labels).mean() > 0.97


# ---------------------------------------------------------------------------------------------
# Validation and configuration
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.zeros((4, 4, 3), np.float32), TypeError, "dtype uint8, got float32"),
        (np.zeros((4, 4), np.uint8), ValueError, r"shape \(H, W, 3\), got \(4, 4\)"),
        (np.zeros((4, 4, 4), np.uint8), ValueError, r"shape \(H, W, 3\), got \(4, 4, 4\)"),
        (np.zeros((0, 4, 3), np.uint8), ValueError, "empty"),
        ([[1, 2, 3]], TypeError, "image 0 must be a numpy array"),
        ([], ValueError, "no images"),
    ],
)
def test_bad_inputs_raise(engine, bad, error, message):
    with pytest.raises(error, match=message):
        engine.infer(bad)


def test_bad_image_in_list_is_named(engine):
    with pytest.raises(TypeError, match="image 1 must have dtype uint8"):
        engine.infer([random_image(32, 32), np.zeros((32, 32, 3), np.int16)])


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="needs a depth model"):
        InferenceEngine(device="cpu")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        InferenceEngine(ContractDepthNet(), device="cpu", precision="fp8")
    with pytest.raises(ValueError, match="unknown depth_output_kind"):
        InferenceEngine(ContractDepthNet(), device="cpu", depth_output_kind="metres")


def test_engine_keeps_no_gradient_state(engine):
    (result,) = engine.infer(random_image(64, 64))
    for task in engine.tasks:
        model = engine._tasks[task].model
        assert not model.training
        assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    assert isinstance(result.depth, np.ndarray) and isinstance(result.labels, np.ndarray)


def test_depth_output_kind_is_recorded():
    engine = InferenceEngine(ContractDepthNet(), device="cpu", depth_output_kind="metric_depth")
    assert engine.depth_output_kind == "metric_depth"
    assert engine.tasks == ("depth",)
    (result,) = engine.infer(random_image(40, 50))
    assert result.labels is None and result.depth.shape == (40, 50)


def test_device_parsing(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    expected_auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected_auto
    for bad in ("gpu", "cuda:x", "cuda:-1", "tpu:0", ""):
        with pytest.raises(ValueError, match="unknown device"):
            resolve_device(bad)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device(spec)
    with pytest.raises(ValueError, match="CUDA is not available"):
        InferenceEngine(ContractDepthNet(), device="cuda")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="only 2 CUDA device"):
        resolve_device("cuda:2")


def test_engine_device_property(engine):
    assert engine.device == torch.device("cpu")
    assert next(engine._tasks["depth"].model.parameters()).device == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_matches_cpu(precision):
    models = (ContractDepthNet(), ContractSegmentationNet())
    image = smooth_image(480, 640)
    (on_cpu,) = InferenceEngine(*models, device="cpu").infer(image)
    models = (ContractDepthNet(), ContractSegmentationNet())
    gpu = InferenceEngine(*models, device="cuda", precision=precision)
    assert gpu.device.type == "cuda"
    (on_gpu,) = gpu.infer(image)
    tolerance = 1e-3 if precision == "fp32" else 0.05
    relative = np.abs(on_gpu.depth - on_cpu.depth).mean() / np.abs(on_cpu.depth).mean()
    assert relative < tolerance
    assert (on_gpu.labels == on_cpu.labels).mean() > 0.9


# ---------------------------------------------------------------------------------------------
# from_variant: wiring against the model package's contract (VARIANTS[name].tasks[task] and
# build_model(variant, task, weights)), checked with a stand-in registry so every branch is
# exercised without building real variants; then once end to end with the real dpt_tiny.
# ---------------------------------------------------------------------------------------------
class StandInTaskSpec:
    def __init__(self, input_size, output_kind, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize=DPT_RESIZE):
        self.input_size, self.output_kind, self.mean, self.std = input_size, output_kind, mean, std
        self.resize = resize


class StandInVariantSpec:
    def __init__(self, name, tasks):
        self.name, self.tasks = name, tasks


STAND_IN_VARIANTS = {
    "dpt_standin": StandInVariantSpec("dpt_standin", {
        "depth": StandInTaskSpec(384, "relative_inverse_depth"),
        "segmentation": StandInTaskSpec(480, "logits"),
    }),
    "dpt_standin_kitti": StandInVariantSpec("dpt_standin_kitti", {
        "depth": StandInTaskSpec((352, 1216), "metric_depth"),
    }),
    "dpt_standin_imagenet": StandInVariantSpec("dpt_standin_imagenet", {
        "depth": StandInTaskSpec(384, "relative_inverse_depth"),
        "segmentation": StandInTaskSpec(480, "logits", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    }),
}


@pytest.fixture
def stand_in_registry(monkeypatch):
    import dpt_ros.model

    built = []

    def build_model(variant, task="depth", weights=None):
        built.append((variant, task, weights))
        return ContractDepthNet() if task == "depth" else ContractSegmentationNet()

    monkeypatch.setattr(dpt_ros.model, "VARIANTS", STAND_IN_VARIANTS, raising=False)
    monkeypatch.setattr(dpt_ros.model, "build_model", build_model)
    return built


def test_from_variant_builds_each_task(stand_in_registry):
    engine = InferenceEngine.from_variant(
        "dpt_standin", tasks=("depth", "segmentation"), weights="d.pt",
        segmentation_weights="s.pt", device="cpu", precision="bf16",
    )
    assert stand_in_registry == [("dpt_standin", "depth", "d.pt"), ("dpt_standin", "segmentation", "s.pt")]
    assert engine.tasks == ("depth", "segmentation")
    assert engine.depth_output_kind == "relative_inverse_depth"
    assert engine.precision == "bf16" and engine.device == torch.device("cpu")
    assert engine.network_size(480, 640, "depth") == (384, 512)
    assert engine.network_size(480, 640, "segmentation") == (480, 640)


def test_from_variant_metric_depth_with_segmentation_from_another_variant(stand_in_registry):
    with pytest.raises(ValueError, match="'dpt_standin_kitti' has no segmentation model.*segmentation_variant"):
        InferenceEngine.from_variant("dpt_standin_kitti", tasks=("depth", "segmentation"), device="cpu")
    stand_in_registry.clear()
    engine = InferenceEngine.from_variant(
        "dpt_standin_kitti", tasks=("depth", "segmentation"), weights="auto",
        segmentation_variant="dpt_standin", segmentation_weights="auto", device="cpu",
    )
    assert stand_in_registry == [("dpt_standin_kitti", "depth", "auto"), ("dpt_standin", "segmentation", "auto")]
    assert engine.depth_output_kind == "metric_depth"
    assert engine.network_size(352, 1216, "depth") == (352, 1216)  # KITTI's own network size


def test_from_variant_segmentation_only_uses_weights(stand_in_registry):
    engine = InferenceEngine.from_variant("dpt_standin", tasks="segmentation", weights="s.pt", device="cpu")
    assert stand_in_registry == [("dpt_standin", "segmentation", "s.pt")]
    assert engine.tasks == ("segmentation",)


def test_from_variant_input_size_override_and_per_task_normalization(stand_in_registry):
    engine = InferenceEngine.from_variant(
        "dpt_standin_imagenet", tasks=("depth", "segmentation"), device="cpu", input_size=256
    )
    assert engine.network_size(480, 640, "depth") == (256, 352)
    assert engine.network_size(480, 640, "segmentation") == (256, 352)
    image = random_image(256, 352)
    np.testing.assert_allclose(
        engine.preprocess(image, "segmentation").numpy(),
        numpy_normalize(image, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), rtol=0, atol=2e-6,
    )
    np.testing.assert_allclose(
        engine.preprocess(image, "depth").numpy(), numpy_normalize(image, (0.5,) * 3, (0.5,) * 3),
        rtol=0, atol=2e-6,
    )


def test_from_variant_rejects_unknown_names(stand_in_registry):
    with pytest.raises(ValueError, match="unknown variant 'dpt_huge'"):
        InferenceEngine.from_variant("dpt_huge", device="cpu")
    with pytest.raises(ValueError, match="tasks must be a non-empty subset"):
        InferenceEngine.from_variant("dpt_standin", tasks=("normals",), device="cpu")
    with pytest.raises(ValueError, match="tasks must be a non-empty subset"):
        InferenceEngine.from_variant("dpt_standin", tasks=(), device="cpu")
    assert stand_in_registry == []


def test_dpt_tiny_end_to_end_all_precisions():
    """The real tiny DPT through from_variant: sizes, batching and reduced precision."""
    engine = InferenceEngine.from_variant("dpt_tiny", tasks=("depth", "segmentation"), device="cpu")
    images = [smooth_image(480, 640, seed=1), smooth_image(352, 1216, seed=2)]
    batched = engine.infer(images)
    for image, result in zip(images, batched):
        assert result.depth.shape == image.shape[:2] and result.labels.shape == image.shape[:2]
        (alone,) = engine.infer(image)
        np.testing.assert_allclose(result.depth, alone.depth, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(result.labels, alone.labels)
    for precision, tolerance in (("bf16", 0.02), ("fp16", 0.005)):
        reduced = InferenceEngine(
            engine._tasks["depth"].model, engine._tasks["segmentation"].model, device="cpu",
            precision=precision, depth_input_size=engine._tasks["depth"].input_size,
            segmentation_input_size=engine._tasks["segmentation"].input_size,
        )
        (actual,) = reduced.infer(images[0])
        expected = batched[0]
        assert np.isfinite(actual.depth).all()
        relative = np.abs(actual.depth - expected.depth).mean() / np.abs(expected.depth).mean()
        assert 0 < relative < tolerance, precision
        assert (actual.labels == expected.labels).mean() > 0.97, precision


def test_channels_last_path_equals_the_contiguous_fp32_path():
    """The optimized NHWC path must give the eager NCHW results (fp32 tolerance)."""
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(2)]
    results = {}
    for channels_last in (False, True):
        engine = InferenceEngine.from_variant("dpt_tiny", tasks=("depth", "segmentation"), device="cpu",
                                              input_size=64, channels_last=channels_last)
        results[channels_last] = engine.infer(images)
    for reference, optimized in zip(results[False], results[True]):
        scale = float(np.abs(reference.depth).max())
        assert float(np.abs(optimized.depth - reference.depth).max()) <= 1e-5 * max(scale, 1.0)
        assert (optimized.labels == reference.labels).mean() > 0.999


@pytest.mark.parametrize("bgr", [False, True])
def test_results_stay_on_the_device_until_read(engine, bgr):
    frames = [smooth_image(48, 64, seed=1), smooth_image(60, 80, seed=2)]
    results = engine.infer([f[:, :, ::-1].copy() if bgr else f for f in frames], bgr=bgr)
    for frame, result in zip(frames, results):
        assert set(result.on_device) == {"image", "depth", "labels"}
        assert all(t.device == engine.device for t in result.on_device.values())
        assert result.read_on_host() == ()  # nothing brought to the host before someone reads it
        np.testing.assert_array_equal(result.on_device["image"].cpu().numpy(), frame)  # RGB either way
        depth = result.depth
        assert result.read_on_host() == ("depth",)
        np.testing.assert_array_equal(result.on_device["depth"].cpu().numpy(), depth)
        np.testing.assert_array_equal(result.on_device["labels"].cpu().numpy(), result.labels)
        assert result.read_on_host() == ("depth", "labels")
        assert result.depth is depth  # one host copy per result, however often it is read
    depth_only = engine.infer(frames[0], tasks=("depth",))[0]
    assert set(depth_only.on_device) == {"image", "depth"} and depth_only.labels is None


def test_results_built_by_hand_keep_their_arrays():
    from dpt_ros.inference import InferenceResult

    depth, labels = np.ones((2, 3), np.float32), np.zeros((2, 3), np.uint8)
    result = InferenceResult(depth=depth, labels=labels, timings_ms={"inference": 2.0})
    assert result.depth is depth and result.labels is labels and result.timings_ms == {"inference": 2.0}
    assert result.on_device == {} and result.read_on_host() == ()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_stages_are_timed_by_events_without_a_synchronize_per_stage(monkeypatch):
    engine = InferenceEngine(ContractDepthNet(), ContractSegmentationNet(), device="cuda")
    image = smooth_image(240, 320)
    engine.infer(image)  # warm-up: kernel selection, allocator
    synchronizes = []
    real = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: synchronizes.append(1) or real(*a, **k))
    (result,) = engine.infer(image)
    assert synchronizes == []  # infer only enqueues work
    timings = result.timings_ms  # waits for the last event
    assert set(timings) == {"preprocess", "inference", "postprocess"} and all(v > 0 for v in timings.values())
    assert result.read_on_host() == ()
    (on_cpu,) = InferenceEngine(ContractDepthNet(), ContractSegmentationNet(), device="cpu").infer(image)
    np.testing.assert_allclose(result.depth, on_cpu.depth, rtol=1e-3, atol=1e-4)
    assert result.read_on_host() == ("depth",)
