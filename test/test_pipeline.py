"""pipeline.py: one frame -> the requested outputs, on the real tiny engine (ROS-free)."""
import math

import numpy as np
import pytest

from dpt_ros.depth import MIN_INVERSE_DEPTH, relative_to_metric
from dpt_ros.geometry import depth_to_xyz
from dpt_ros.pipeline import (Intrinsics, OutputRequest, PipelineSettings, derive_outputs, infer_frames,
                              metric_depth_available, model_inverse_depth, needed_tasks, process_frame,
                              process_frames, to_metric_depth)


@pytest.fixture(scope="module")
def engine():
    from dpt_ros.inference import InferenceEngine

    return InferenceEngine.from_variant("dpt_tiny", tasks=("depth", "segmentation"), device="cpu", input_size=64)


def scene(height=48, width=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_metric_depth_marks_invalid_nan_and_non_positive_inverse_depth_beyond_range():
    # No max_range here: before REP 117/118 validity, -5 was clamped to 1e-8 and published as a
    # valid-looking 1e8 m, which only depth.max_range turned into NaN.
    raw = np.array([[1.0, np.nan], [np.inf, -5.0]], np.float32)
    depth = to_metric_depth(raw, "relative_inverse_depth", PipelineSettings(depth_scale=1.0, depth_shift=0.0))
    np.testing.assert_array_equal(depth, [[1.0, np.nan], [np.nan, np.inf]])
    depth = to_metric_depth(np.array([[4.0, 2.0]], np.float32), "relative_inverse_depth",
                            PipelineSettings(depth_scale=0.5, depth_shift=0.5, depth_max_range=0.0))
    np.testing.assert_allclose(depth, [[1 / 2.5, 1 / 1.5]], rtol=1e-6)


def test_a_negative_shift_gives_plus_inf_never_a_large_finite_depth():
    # inverse = 0.5*out - 1: out 4 -> 1 m, out 2 -> exactly 0, out 1 -> negative, out 2.00000002
    # -> a positive inverse depth below MIN_INVERSE_DEPTH (farther than 1e8 m): all beyond range.
    raw = np.array([[4.0, 2.0, 1.0, 0.0, 2.0 + 1e-8]], np.float32)
    settings = PipelineSettings(depth_scale=0.5, depth_shift=-1.0)
    depth = to_metric_depth(raw, "relative_inverse_depth", settings)
    np.testing.assert_array_equal(depth, [[1.0, np.inf, np.inf, np.inf, np.inf]])
    noise = np.random.default_rng(0).normal(0.0, 3.0, (64, 64)).astype(np.float32)
    depth = to_metric_depth(noise, "relative_inverse_depth", settings)
    finite = depth[np.isfinite(depth)]
    assert finite.size and finite.max() < 1 / MIN_INVERSE_DEPTH and finite.min() > 0
    assert np.isposinf(depth).sum() == (noise * np.float32(0.5) - np.float32(1.0) <= MIN_INVERSE_DEPTH).sum()
    assert not np.isneginf(depth).any() and not np.isnan(depth).any()


def test_depth_beyond_max_range_is_plus_inf_and_invalid_metric_depth_nan():
    metres = np.array([[3.0, 0.0, 12.0, -2.0, np.nan, np.inf, -np.inf, 10.0]], np.float32)
    out = to_metric_depth(metres, "metric_depth", PipelineSettings(depth_max_range=10.0))
    np.testing.assert_array_equal(out, [[3.0, np.nan, np.inf, np.nan, np.nan, np.inf, np.nan, 10.0]])
    assert metres[0, 1] == 0.0 and metres[0, 2] == 12.0  # the input is not modified
    # the same on a relative model: 1/(0.25*0.5) = 8 m is beyond 5 m, 1/(0.25*2) = 2 m is not
    out = to_metric_depth(np.array([[0.5, 2.0, np.nan]], np.float32), "relative_inverse_depth",
                          PipelineSettings(depth_scale=0.25, depth_max_range=5.0))
    np.testing.assert_array_equal(out, np.array([[np.inf, 2.0, np.nan]], np.float32))


def test_relative_to_metric_follows_the_rule_on_arrays_and_tensors_alike():
    import torch

    # inverse = 0.5*out - 0.25 inverse metres
    out = np.array([3.0, 1.0, 0.5, 0.25, 0.0, -1.0, np.nan, np.inf, -np.inf], np.float32)
    expected = np.array([0.8, 4.0, np.inf, np.inf, np.inf, np.inf, np.nan, np.nan, np.nan], np.float32)
    array = relative_to_metric(out, 0.5, -0.25)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, expected)
    tensor = relative_to_metric(torch.from_numpy(out), 0.5, -0.25)
    assert tensor.dtype == torch.float32
    np.testing.assert_array_equal(tensor.numpy(), array)
    # an inverse depth that overflows float32 is not a number of metres: invalid, not 0 m
    assert np.isnan(relative_to_metric(np.array([1e30], np.float32), 1e10, 0.0)).all()
    assert torch.isnan(relative_to_metric(torch.tensor([1e30]), 1e10, 0.0)).all()


def test_metric_depth_needs_a_metric_model_or_a_scale():
    assert metric_depth_available("metric_depth", PipelineSettings())
    assert not metric_depth_available("relative_inverse_depth", PipelineSettings())
    assert metric_depth_available("relative_inverse_depth", PipelineSettings(depth_scale=0.1))


def test_aligned_settings_decide_metric_depth_for_any_model():
    """Online alignment: a usable (scale, shift) maps the model's inverse depth, for a relative
    model and for a metric one (a correction of 1 / its metres); no usable alignment = no metres,
    not even a metric model's own, and the fixed depth.scale is replaced."""
    fixed = PipelineSettings(depth_scale=0.7, depth_shift=0.3, depth_max_range=9.0)
    none = fixed.aligned(None)
    assert (none.depth_aligned, none.depth_scale, none.depth_shift, none.depth_max_range) == (True, 0.0, 0.0, 9.0)
    assert not metric_depth_available("relative_inverse_depth", none)
    assert not metric_depth_available("metric_depth", none)
    aligned = fixed.aligned((0.5, 0.25))
    assert metric_depth_available("metric_depth", aligned) and metric_depth_available("relative_inverse_depth", aligned)

    relative = np.array([[1.0, 3.5]], np.float32)
    np.testing.assert_allclose(to_metric_depth(relative, "relative_inverse_depth", aligned),
                               [[1 / 0.75, 1 / 2.0]], rtol=1e-6)
    metres = np.array([[2.0, 8.0]], np.float32)
    np.testing.assert_array_equal(model_inverse_depth(metres, "metric_depth"), [[0.5, 0.125]])
    # scale_only correction of a metric model: depth = model depth / scale
    np.testing.assert_allclose(to_metric_depth(metres, "metric_depth", fixed.aligned((0.5, 0.0))), [[4.0, np.inf]],
                               rtol=1e-6)  # 16 m is beyond depth.max_range 9 m: +inf (REP 117)
    assert model_inverse_depth(relative, "relative_inverse_depth") is relative


def test_infer_then_derive_per_frame_is_process_frames(engine):
    images = [scene(seed=4), scene(seed=5)]
    request = OutputRequest(depth_metric=True, depth_relative=True, labels=False)
    assert needed_tasks(engine.tasks, [OutputRequest(depth_metric=False, depth_relative=False, labels=False,
                                                     alignment=True)]) == ("depth",)
    settings = [PipelineSettings().aligned((1e-3, 0.2)), PipelineSettings().aligned(None)]
    results = infer_frames(engine, images, [request] * 2)
    frames = [derive_outputs(engine, rgb, result, frame_settings, request, None)
              for rgb, result, frame_settings in zip(images, results, settings)]
    reference = process_frames(engine, images, PipelineSettings(depth_scale=1e-3, depth_shift=0.2), [request] * 2,
                               [None] * 2)[0]
    np.testing.assert_array_equal(frames[0].depth_metric, reference.depth_metric)
    np.testing.assert_array_equal(frames[0].depth_relative, reference.depth_relative)
    assert frames[1].depth_metric is None and frames[1].depth_relative is not None


def test_requested_outputs_only(engine):
    rgb = scene()
    settings = PipelineSettings(depth_scale=1e-3, depth_shift=0.2)
    nothing = process_frame(engine, rgb, settings, OutputRequest(depth_metric=False, depth_relative=False,
                                                                 labels=False))
    assert all(getattr(nothing, name) is None for name in
               ("depth_metric", "depth_relative", "depth_colored", "labels", "labels_colored", "cloud"))
    everything = process_frame(engine, rgb, settings, OutputRequest(True, True, True, True, True, True),
                               Intrinsics(40.0, 41.0, 31.5, 23.5))
    assert everything.depth_relative.shape == everything.depth_metric.shape == (48, 64)
    np.testing.assert_allclose(everything.depth_metric,
                               relative_to_metric(everything.depth_relative, 1e-3, 0.2), rtol=1e-6)
    assert everything.depth_colored.shape == everything.labels_colored.shape == (48, 64, 3)
    assert everything.labels.dtype == np.uint8 and everything.labels.max() < 150
    points = everything.cloud.points().reshape(48, 64)
    expected = depth_to_xyz(everything.depth_metric, 40.0, 41.0, 31.5, 23.5)
    np.testing.assert_array_equal(points["z"], expected[..., 2])
    np.testing.assert_array_equal(points["x"], expected[..., 0])
    assert everything.network_size == engine.network_size(48, 64, "depth")
    assert set(everything.timings_ms) >= {"preprocess", "inference", "postprocess"}


def test_cloud_needs_intrinsics_and_honours_stride_and_range(engine):
    rgb = scene()
    request = OutputRequest(depth_metric=True, cloud=True)
    settings = PipelineSettings(depth_scale=1e-6, depth_shift=0.5, cloud_stride=2, cloud_max_range=1.0)
    assert process_frame(engine, rgb, settings, request).cloud is None  # no camera_info yet
    cloud = process_frame(engine, rgb, settings, request, Intrinsics(40.0, 40.0, 32.0, 24.0)).cloud
    assert (cloud.height, cloud.width) == (24, 32)
    assert np.isnan(cloud.points()["z"]).all()  # every pixel is ~2 m, beyond cloud.max_range 1 m


def test_batch_of_cameras_equals_frames_one_by_one(engine):
    images = [scene(seed=1), scene(60, 80, seed=2), scene(seed=3)]
    settings = PipelineSettings(depth_scale=1e-3, depth_shift=0.2)
    request = OutputRequest(depth_metric=True, depth_relative=True, labels=True)
    batch = process_frames(engine, images, settings, [request] * 3, [None] * 3)
    for image, batched in zip(images, batch):
        single = process_frame(engine, image, settings, request)
        np.testing.assert_allclose(batched.depth_metric, single.depth_metric, rtol=1e-5)
        assert math.isclose(float(np.abs(batched.depth_relative - single.depth_relative).max()), 0.0, abs_tol=1e-5)
        np.testing.assert_array_equal(batched.labels, single.labels)


def test_a_model_nobody_listens_to_is_not_run(engine):
    both = ("depth", "segmentation")
    depth_only = OutputRequest(depth_metric=False, depth_relative=True, labels=False)
    labels_only = OutputRequest(depth_metric=False, depth_relative=False, labels=True)
    nothing = OutputRequest(depth_metric=False, depth_relative=False, labels=False)
    assert needed_tasks(both, [depth_only]) == ("depth",)
    assert needed_tasks(both, [labels_only]) == ("segmentation",)
    assert needed_tasks(both, [depth_only, labels_only]) == both  # cameras of one batch combine
    assert needed_tasks(both, [OutputRequest(depth_metric=False, depth_relative=False, labels=False,
                                             cloud=True)]) == both  # cloud points carry labels
    assert needed_tasks(both, [nothing]) == ()
    assert needed_tasks(("depth",), [labels_only]) == ()

    rgb = scene()
    depth_frame = process_frame(engine, rgb, PipelineSettings(), depth_only)
    assert depth_frame.depth_relative is not None and depth_frame.labels is None
    full = engine.infer(rgb)[0]
    np.testing.assert_array_equal(depth_frame.depth_relative, full.depth)
    skipped = engine.infer(rgb, tasks=("depth",))[0]
    assert skipped.labels is None and skipped.depth is not None
    with pytest.raises(ValueError, match="not enabled"):
        engine.infer(rgb, tasks=("normals",))


def test_metric_depth_of_a_tensor_equals_the_array_path():
    import torch

    raw = np.array([[0.5, 2.0, np.nan], [-1.0, 40.0, 1e-3]], np.float32)
    settings = PipelineSettings(depth_scale=0.25, depth_shift=0.05, depth_max_range=3.0)
    tensor = torch.from_numpy(raw.copy())
    out = to_metric_depth(tensor, "relative_inverse_depth", settings)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), to_metric_depth(raw, "relative_inverse_depth", settings))
    np.testing.assert_array_equal(tensor.numpy(), raw)  # input untouched
    # hand values: 1/(0.25*0.5+0.05) = 5.714 m > 3 m -> +inf; 1/(0.25*2+0.05) = 1.818 m;
    # 0.25*(-1)+0.05 < 0 -> +inf; NaN stays NaN
    np.testing.assert_allclose(out.numpy()[0, 1], 1 / 0.55, rtol=1e-6)
    assert np.isposinf(out.numpy()[0, 0]) and np.isposinf(out.numpy()[1, 0]) and np.isnan(out.numpy()[0, 2])
    metres = torch.tensor([[3.0, 0.0, 12.0, -2.0, math.nan, math.inf, -math.inf]])
    np.testing.assert_array_equal(to_metric_depth(metres, "metric_depth", PipelineSettings(depth_max_range=10.0)).numpy(),
                                  to_metric_depth(metres.numpy(), "metric_depth", PipelineSettings(depth_max_range=10.0)))


def test_beyond_range_and_invalid_depths_are_nan_points_in_the_cloud(engine):
    """A negative depth.shift puts part of the frame beyond range: those depths are +inf, their
    cloud points NaN (is_dense false), and no point lies farther than a finite depth can."""
    rgb = scene(seed=7)
    relative = engine.infer(rgb, tasks=("depth",))[0].depth
    shift = -float(np.median(relative)) * 0.05  # about half the pixels get a non-positive inverse depth
    settings = PipelineSettings(depth_scale=0.05, depth_shift=shift)
    outputs = process_frame(engine, rgb, settings, OutputRequest(depth_metric=True, cloud=True),
                            Intrinsics(40.0, 41.0, 31.5, 23.5))
    beyond = np.isposinf(outputs.depth_metric)
    assert 0.2 < beyond.mean() < 0.8 and not np.isnan(outputs.depth_metric).any()
    points = outputs.cloud.points()
    assert outputs.cloud.is_dense is False
    for axis in "xyz":
        assert np.isnan(points[axis][beyond]).all() and np.isfinite(points[axis][~beyond]).all()
    assert np.nanmax(points["z"]) < 1 / MIN_INVERSE_DEPTH


@pytest.mark.parametrize("on_device", [False, True])
def test_cloud_bytes_equal_host_back_projection_and_packing(engine, monkeypatch, on_device):
    """Both derivation paths - numpy on the host (CPU engines) and torch on the engine's device
    tensors (GPU engines; forced here on the CPU engine) - give the bytes of packing the published
    metric depth, the input image and the published labels on the host."""
    import dpt_ros.pipeline as pipeline
    from dpt_ros.cloud import pack_cloud

    assert pipeline.derives_on_device(engine) is False  # a CPU engine derives with numpy
    monkeypatch.setattr(pipeline, "derives_on_device", lambda _engine: on_device)
    rgb = scene(seed=5)
    settings = PipelineSettings(depth_scale=0.05, depth_shift=0.2, cloud_stride=1, cloud_max_range=4.0)
    request = OutputRequest(depth_metric=True, labels=True, cloud=True)
    outputs = process_frame(engine, rgb, settings, request, Intrinsics(40.0, 41.0, 31.5, 23.5))
    host_xyz = depth_to_xyz(outputs.depth_metric, 40.0, 41.0, 31.5, 23.5, max_range=4.0)
    expected = pack_cloud(host_xyz, rgb=rgb, labels=outputs.labels)
    assert bytes(outputs.cloud.data) == bytes(expected.data)
    z = outputs.cloud.points()["z"]
    assert np.isfinite(z).any() and np.isnan(z).any()  # depths span 3.4..4.7 m around the 4 m limit


def spy_results(engine, monkeypatch):
    """The InferenceResults of every engine.infer call, as they were handed to the pipeline."""
    seen = []
    infer = engine.infer

    def infer_and_keep(*args, **kwargs):
        results = infer(*args, **kwargs)
        seen.extend(results)
        return results

    monkeypatch.setattr(engine, "infer", infer_and_keep)
    return seen


@pytest.mark.parametrize("on_device", [False, True])
def test_only_what_an_output_wants_comes_to_the_host(engine, monkeypatch, on_device):
    """The cloud alone reads neither the depth image nor the labels on the host when derived on the
    device (with a GPU engine neither is downloaded); each image output brings exactly its own.
    The cloud's bytes are the same on both paths and whatever else is requested."""
    import dpt_ros.pipeline as pipeline

    monkeypatch.setattr(pipeline, "derives_on_device", lambda _engine: on_device)
    seen = spy_results(engine, monkeypatch)
    rgb, camera = scene(seed=8), Intrinsics(40.0, 41.0, 31.5, 23.5)
    settings = PipelineSettings(depth_scale=0.05, depth_shift=0.2)
    cloud_only = process_frame(engine, rgb, settings, OutputRequest(False, False, False, False, False, True), camera)
    assert cloud_only.cloud is not None and cloud_only.depth_metric is None and cloud_only.labels is None
    assert seen[-1].read_on_host() == (() if on_device else ("depth", "labels"))
    cases = {
        OutputRequest(depth_metric=True, depth_relative=False, labels=False, cloud=True): {"depth_metric"},
        OutputRequest(depth_metric=False, depth_relative=False, labels=True, cloud=True): {"labels"},
        OutputRequest(depth_metric=False, depth_relative=True, labels=False, cloud=True): {"depth_relative"},
    }
    for request, wanted in cases.items():
        outputs = process_frame(engine, rgb, settings, request, camera)
        produced = {name for name in ("depth_metric", "depth_relative", "labels") if getattr(outputs, name) is not None}
        assert produced == wanted
        assert bytes(outputs.cloud.data) == bytes(cloud_only.cloud.data)
        if on_device:
            read = set(seen[-1].read_on_host())
            assert read == ({"depth"} if "depth_relative" in wanted else set()) | ({"labels"} & wanted)
    both = process_frames(engine, [rgb, scene(seed=9)], settings,
                          [OutputRequest(False, False, False, False, False, True)] * 2, [camera] * 2)
    assert all(outputs.cloud is not None for outputs in both)
    if on_device:  # a batch of cameras whose only subscriber is the cloud downloads nothing else
        assert [result.read_on_host() for result in seen[-2:]] == [(), ()]


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_engine_outputs_equal_the_cpu_engine_outputs():
    from dpt_ros.inference import InferenceEngine

    engines = [InferenceEngine.from_variant("dpt_tiny", tasks=("depth", "segmentation"), device=device,
                                            input_size=64) for device in ("cpu", "cuda")]
    rgb = scene(seed=6)
    settings = PipelineSettings(depth_scale=1e-3, depth_shift=0.2)
    request = OutputRequest(depth_metric=True, labels=True, cloud=True)
    cpu, gpu = (process_frame(e, rgb, settings, request, Intrinsics(40.0, 41.0, 31.5, 23.5)) for e in engines)
    np.testing.assert_allclose(gpu.depth_metric, cpu.depth_metric, rtol=1e-3)
    cpu_points, gpu_points = cpu.cloud.points(), gpu.cloud.points()
    for name in ("x", "y", "z"):
        np.testing.assert_allclose(gpu_points[name], cpu_points[name], rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(gpu_points["rgb"], cpu_points["rgb"])
    assert (gpu_points["label"] == cpu_points["label"]).mean() > 0.99  # argmax ties may flip on a GPU


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_cloud_alone_downloads_only_the_cloud_through_reused_buffers(monkeypatch):
    from dpt_ros.inference import InferenceEngine

    engine = InferenceEngine.from_variant("dpt_tiny", tasks=("depth", "segmentation"), device="cuda", input_size=64)
    seen = spy_results(engine, monkeypatch)
    settings = PipelineSettings(depth_scale=1e-3, depth_shift=0.2)
    request = OutputRequest(depth_metric=False, depth_relative=False, labels=False, cloud=True)
    camera = Intrinsics(40.0, 41.0, 31.5, 23.5)
    clouds = [process_frame(engine, scene(seed=seed), settings, request, camera).cloud for seed in range(4)]
    assert all(cloud is not None and cloud.height == 48 for cloud in clouds)
    assert [result.read_on_host() for result in seen] == [()] * 4  # neither depth nor labels downloaded
    assert engine.staging.buffers == 2  # one upload and one cloud-download buffer, reused every frame


def test_results_built_by_a_stand_in_engine_feed_every_output():
    """Host arrays in hand-built InferenceResults (what test doubles of the engine return) are used
    as they are: the pipeline needs no device tensors and no staging from a CPU engine."""
    import torch

    from dpt_ros.inference import InferenceResult

    class StandInEngine:
        device = torch.device("cpu")
        tasks = ("depth", "segmentation")
        depth_output_kind = "relative_inverse_depth"

        def network_size(self, height, width, task):
            return height, width

        def infer(self, images, bgr=False, tasks=None):
            return [InferenceResult(depth=np.full(image.shape[:2], 2.0, np.float32),
                                    labels=np.full(image.shape[:2], 7, np.uint8), timings_ms={"inference": 1.5})
                    for image in images]

    outputs = process_frame(StandInEngine(), scene(), PipelineSettings(depth_scale=0.5),
                            OutputRequest(True, True, False, True, False, True), Intrinsics(40.0, 41.0, 31.5, 23.5))
    assert (outputs.depth_metric == 1.0).all() and (outputs.depth_relative == 2.0).all() and (outputs.labels == 7).all()
    assert (outputs.cloud.points()["z"] == 1.0).all() and (outputs.cloud.points()["label"] == 7).all()
    assert outputs.timings_ms["inference"] == 1.5 and outputs.timings_ms["postprocess"] > 0
