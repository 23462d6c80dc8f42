"""ModelRunner / InferenceEngine compile_mode: eager, torch.compile, CUDA graphs, and the fallbacks.

torch.compile runs for real on the CPU (inductor, the machine's C compiler) on the tiny variant;
CUDA-graph capture runs only where CUDA exists, its CPU fallback runs everywhere.
"""
import numpy as np
import pytest
import torch

import dpt_ros.model_runner as model_runner
from dpt_ros.inference import InferenceEngine
from dpt_ros.model import build_model
from dpt_ros.model_runner import COMPILE_MODES, MAX_CAPTURED_SHAPES, ModelRunner

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GELU(),
                                        torch.nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x):
        return self.body(x)[:, 0]


def image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_off_runs_the_model_as_is():
    model = SmallNet().eval()
    x = torch.randn(2, 3, 32, 32)
    runner = ModelRunner(model, "eager", CPU, torch.float32)
    with torch.inference_mode():
        assert torch.equal(runner(x), model(x))
    assert runner.status == "eager" and not runner.fell_back


def test_unknown_mode_is_refused_by_runner_and_engine():
    with pytest.raises(ValueError, match="unknown compile mode 'tensorrt'.*eager"):
        ModelRunner(SmallNet(), "tensorrt", CPU, torch.float32)
    with pytest.raises(ValueError, match="unknown compile_mode 'fast'"):
        InferenceEngine(SmallNet(), device="cpu", compile_mode="fast")
    assert COMPILE_MODES == ("eager", "torch_compile", "cuda_graph")


def test_cuda_graph_on_cpu_falls_back_once_with_the_reason():
    warnings = []
    engine = InferenceEngine(SmallNet(), device="cpu", compile_mode="cuda_graph", warn=warnings.append)
    eager = InferenceEngine(SmallNet(), device="cpu")
    assert len(warnings) == 1 and "cuda_graph needs a CUDA device" in warnings[0]
    assert "running eagerly" in warnings[0] and warnings[0].startswith("depth model:")
    assert engine.compile_status == {"depth": "eager (cuda_graph fell back: cuda_graph needs a CUDA device, "
                                              "this engine runs on cpu)"}
    frames = [image(64, 96, seed) for seed in range(3)]
    for frame in frames:
        assert np.array_equal(engine.infer(frame)[0].depth, eager.infer(frame)[0].depth)
    assert len(warnings) == 1  # said once, not per frame


def test_compile_failure_at_first_call_falls_back_and_still_answers(monkeypatch):
    """What a missing C compiler or an untraceable operator looks like: the compiled callable raises."""
    calls = []

    def broken_compile(model, **options):
        calls.append(options)

        def compiled(batch):
            raise RuntimeError("InductorError: no working C compiler\nlong traceback text")
        return compiled

    monkeypatch.setattr(model_runner.torch, "compile", broken_compile)
    warnings = []
    engine = InferenceEngine(SmallNet(), device="cpu", compile_mode="torch_compile", warn=warnings.append)
    reference = InferenceEngine(SmallNet(), device="cpu")
    assert calls == [{"dynamic": False}]
    assert engine.compile_status == {"depth": "torch_compile"} and warnings == []

    frame = image(64, 64)
    assert np.array_equal(engine.infer(frame)[0].depth, reference.infer(frame)[0].depth)
    assert engine.compile_status["depth"] == (
        "eager (torch_compile fell back: torch.compile failed: RuntimeError: InductorError: no working C compiler)")
    assert len(warnings) == 1 and "torch.compile failed" in warnings[0]
    assert np.array_equal(engine.infer(frame)[0].depth, reference.infer(frame)[0].depth)
    assert len(warnings) == 1


def test_compile_raising_at_construction_falls_back(monkeypatch):
    def refusing_compile(model, **options):
        raise RuntimeError("dynamo is not supported on this Python")

    monkeypatch.setattr(model_runner.torch, "compile", refusing_compile)
    warnings = []
    runner = ModelRunner(SmallNet(), "torch_compile", CPU, torch.float32, warn=warnings.append, name="depth model")
    assert runner.fell_back and "dynamo is not supported" in runner.status
    assert warnings == ["depth model: torch_compile is not usable, running eagerly instead: "
                        "torch.compile failed: RuntimeError: dynamo is not supported on this Python"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_torch_compile_of_dpt_tiny_equals_eager_on_cpu():
    """The real thing: inductor compiles the tiny DPT (ViT + decoder) for the CPU; the outputs of
    the compiled engine equal the eager engine's to float rounding, for two input shapes."""
    torch._dynamo.reset()
    frame, other_size = image(64, 64, 1), image(64, 128, 2)
    eager = InferenceEngine(build_model("dpt_tiny", seed=0), device="cpu", depth_input_size=64)
    warnings = []
    compiled = InferenceEngine(build_model("dpt_tiny", seed=0), device="cpu", depth_input_size=64,
                               compile_mode="torch_compile", warn=warnings.append)
    for rgb in (frame, frame, other_size):  # a second shape is specialised too
        expected = eager.infer(rgb)[0].depth
        got = compiled.infer(rgb)[0].depth
        assert np.abs(got - expected).max() <= 1e-4 * float(np.abs(expected).max())
    assert warnings == [] and compiled.compile_status == {"depth": "torch_compile"}

@needs_cuda
@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-4), ("bf16", 3e-2)])
def test_cuda_graph_equals_eager(precision, tolerance):
    eager = InferenceEngine(build_model("dpt_tiny", seed=0), device="cuda", precision=precision,
                            depth_input_size=64)
    warnings = []
    graphed = InferenceEngine(build_model("dpt_tiny", seed=0), device="cuda", precision=precision,
                              depth_input_size=64, compile_mode="cuda_graph", warn=warnings.append)
    frames = [image(64, 64, 1), image(64, 64, 2), image(96, 64, 3), image(64, 64, 4)]
    for rgb in frames:  # replays with new data, and a second captured shape
        expected = eager.infer(rgb)[0].depth
        got = graphed.infer(rgb)[0].depth
        assert np.abs(got - expected).max() <= tolerance * float(np.abs(expected).max())
    batch = graphed.infer(frames[:2])  # a batch of two is its own shape
    assert np.abs(batch[1].depth - eager.infer(frames[1])[0].depth).max() <= tolerance * float(
        np.abs(batch[1].depth).max())
    assert warnings == [] and graphed.compile_status == {"depth": "cuda_graph"}


@needs_cuda
def test_cuda_graph_output_is_not_overwritten_by_the_next_replay():
    runner = ModelRunner(SmallNet().cuda().eval(), "cuda_graph", torch.device("cuda"), torch.float32)
    with torch.inference_mode():
        first_input, second_input = torch.randn(1, 3, 32, 32, device="cuda"), torch.randn(1, 3, 32, 32, device="cuda")
        first = runner(first_input)
        kept = first.clone()
        runner(second_input)
        assert torch.equal(first, kept)


@needs_cuda
def test_cuda_graph_shape_limit_runs_new_shapes_eagerly():
    warnings = []
    model = SmallNet().cuda().eval()
    runner = ModelRunner(model, "cuda_graph", torch.device("cuda"), torch.float32, warn=warnings.append)
    with torch.inference_mode():
        for index in range(MAX_CAPTURED_SHAPES + 2):
            x = torch.randn(1, 3, 32, 32 + 32 * index, device="cuda")
            assert torch.allclose(runner(x), model(x), atol=1e-5)
    assert len(warnings) == 1 and "run eagerly" in warnings[0] and not runner.fell_back
