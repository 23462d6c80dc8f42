"""Inference engine: uint8 images in, depth and ADE20K labels at input resolution out.

ROS-free.  Everything after the upload happens on the engine's device: channel order, resize to
the network size, normalization, the forward pass(es), resize back, argmax.  Results stay on the
device (``InferenceResult.on_device``) until an output needs them on the host: ``result.depth``
and ``result.labels`` make their host copy when first read, through page-locked staging buffers
reused per shape (dpt_ros.host_transfer), so a caller that only needs, say, a point cloud built
on the device never downloads the depth image or the labels.  On a GPU the stages are timed with
CUDA events and nothing synchronizes the device until a result is read.

Preprocessing follows each model's reference code (``dpt_ros.resize_rules``): RGB, keep the aspect
ratio and resize bicubically to the network size of the variant's rule (DPT: scale as little as
possible to multiples of 32; Depth Anything V2: at least the network size, multiples of 14), then
``(x / 255 - mean) / std``.  Depth is resized back as the rule says (DPT bicubic, Depth Anything V2
bilinear with aligned corners), segmentation logits bilinearly before the argmax
(align_corners=False), as in the reference evaluations; the labels come from
dpt_ros.bilinear_argmax, which gives the argmax of the resized logits without resizing all 150
class planes on a CPU.
"""
from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dpt_ros.bilinear_argmax import resized_argmax
from dpt_ros.host_transfer import HostStaging
from dpt_ros.model_runner import COMPILE_MODES, ModelRunner
from dpt_ros.resize_rules import DPT_RESIZE, ResizeRule, as_height_width, network_size

TASKS = ("depth", "segmentation")
DEPTH_OUTPUT_KINDS = ("relative_inverse_depth", "metric_depth")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
STAGES = ("preprocess", "inference", "postprocess")


class InferenceResult:
    """Outputs for one input image, at the input's resolution.

    ``depth``: (H, W) float32 host array, relative inverse depth (unitless) or metres, see
    ``InferenceEngine.depth_output_kind``; None when depth is off.
    ``labels``: (H, W) uint8 host array, ADE20K class index 0..149 (objectInfo150 order,
    0 = wall); None when segmentation is off.
    Both are copied from the device when first read (a CPU engine's are views, no copy).
    ``on_device``: the same data as torch tensors on the engine's device - "image" (H, W, 3)
    uint8 RGB input, "depth", "labels" - for outputs derived there (metric depth, point cloud).
    ``timings_ms``: time of the "preprocess", "inference" and "postprocess" stages of the
    ``infer`` call that produced this result (images batched together share one set of timings):
    wall time on a CPU, device time between CUDA events on a GPU (reading it waits for the
    engine's work of that call, once).
    """

    def __init__(self, depth: np.ndarray | None = None, labels: np.ndarray | None = None,
                 timings_ms: dict[str, float] | None = None, on_device: dict[str, torch.Tensor] | None = None,
                 staging: HostStaging | None = None, clock: "_StageClock | None" = None):
        self._host = {"depth": depth, "labels": labels}
        self.on_device: dict[str, torch.Tensor] = dict(on_device or {})
        self._timings = dict(timings_ms or {})
        self._staging = staging
        self._clock = clock
        self._downloaded: set[str] = set()

    @property
    def depth(self) -> np.ndarray | None:
        return self._host_copy("depth")

    @property
    def labels(self) -> np.ndarray | None:
        return self._host_copy("labels")

    @property
    def timings_ms(self) -> dict[str, float]:
        if self._clock is not None:
            self._timings, self._clock = self._clock.totals_ms(), None
        return dict(self._timings)

    def has(self, name: str) -> bool:
        """Whether the result holds "depth" / "labels" (on the device or the host), without a copy."""
        return name in self.on_device or self._host.get(name) is not None

    def read_on_host(self) -> tuple[str, ...]:
        """Which of "depth" and "labels" were brought to the host from ``on_device`` (copied from a
        GPU, a view on a CPU): what tests check to see that no output downloaded more than it used."""
        return tuple(name for name in self._host if name in self._downloaded)

    def _host_copy(self, name: str) -> np.ndarray | None:
        if self._host[name] is None and name in self.on_device:
            tensor = self.on_device[name]
            self._host[name] = self._staging.to_host(tensor) if self._staging is not None else tensor.cpu().numpy()
            self._downloaded.add(name)
        return self._host[name]


def resolve_device(spec: str | torch.device) -> torch.device:
    """"cpu", "cuda", "cuda:N" or "auto" (CUDA when available, else CPU) -> torch.device."""
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise ValueError(f"unknown device {spec!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {spec!r} requested but CUDA is not available on this machine "
            "(torch.cuda.is_available() is False); use device 'cpu' or 'auto'"
        )
    index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ValueError(
            f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return torch.device("cuda", index)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Validate ``precision`` ("fp32", "fp16", "bf16") for ``device``.

    fp16 and bf16 run the model under torch.autocast on the engine's device; both are supported
    by CPU autocast in the torch versions we use (slow on CPUs without native half support, but
    correct).  bf16 on CUDA needs a GPU that supports it (Ampere or newer).
    """
    key = str(precision).strip().lower()
    if key not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: expected one of {sorted(PRECISIONS)}")
    if key == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision 'bf16' is not supported by {torch.cuda.get_device_name(device)}")
    return key


def validate_image(image, position: int | None = None) -> np.ndarray:
    where = "image" if position is None else f"image {position}"
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{where} must be a numpy array (H, W, 3) uint8, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{where} must have dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{where} must have shape (H, W, 3), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{where} is empty: shape {image.shape}")
    return image


class _StageClock:
    """Time per stage of one ``infer`` call.

    On a CPU: wall time around each stage.  On a GPU: CUDA events recorded around each stage on the
    current stream, read once at the end (``totals_ms`` waits for the last event), so no stage
    waits for the device just to be timed."""

    def __init__(self, device: torch.device):
        self._cuda = device.type == "cuda"
        self._totals = dict.fromkeys(STAGES, 0.0)
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextlib.contextmanager
    def measure(self, stage: str):
        if self._cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((stage, start, end))
            return
        started = time.perf_counter()
        yield
        self._totals[stage] += (time.perf_counter() - started) * 1e3

    def totals_ms(self) -> dict[str, float]:
        if self._events:
            self._events[-1][2].synchronize()
            for stage, start, end in self._events:
                self._totals[stage] += start.elapsed_time(end)
            self._events.clear()
        return dict(self._totals)


@dataclass
class _TaskRunner:
    """One task's model and preprocessing constants (already on the engine's device)."""

    model: torch.nn.Module
    forward: ModelRunner  # model's forward: eager, torch.compile or CUDA graphs, float32 out
    input_size: tuple[int, int]  # (height, width) the network was trained at
    resize: ResizeRule  # the reference code's image -> network (and depth -> image) resize
    scale: torch.Tensor  # per-channel 1 / (255 * std), shape (1, 3, 1, 1)
    offset: torch.Tensor  # per-channel -mean / std, shape (1, 3, 1, 1)


class InferenceEngine:
    """Runs DPT depth and/or segmentation on uint8 images of any size.

    The models are moved to ``device`` and put in eval mode with gradients off.  Each call to
    ``infer`` runs one forward per task per group of images sharing a network size.

    ``compile_mode``: "eager", "torch_compile" or "cuda_graph" (CUDA only), both specialised
    per input shape (see dpt_ros.model_runner); an accelerated mode that cannot work falls back to
    eager and says why through ``warn`` (default: the ``logging`` module), see ``compile_status``.
    """

    def __init__(
        self,
        depth_model: torch.nn.Module | None = None,
        segmentation_model: torch.nn.Module | None = None,
        *,
        depth_output_kind: str = "relative_inverse_depth",
        device: str | torch.device = "auto",
        precision: str = "fp32",
        depth_input_size: int | tuple[int, int] = 384,
        segmentation_input_size: int | tuple[int, int] = 480,
        depth_resize: ResizeRule = DPT_RESIZE,
        segmentation_resize: ResizeRule = DPT_RESIZE,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        channels_last: bool = True,
        compile_mode: str = "eager",
        warn: Callable[[str], None] | None = None,
    ):
        if depth_model is None and segmentation_model is None:
            raise ValueError("InferenceEngine needs a depth model, a segmentation model, or both")
        if depth_output_kind not in DEPTH_OUTPUT_KINDS:
            raise ValueError(
                f"unknown depth_output_kind {depth_output_kind!r}: expected one of {DEPTH_OUTPUT_KINDS}"
            )
        self._device = resolve_device(device)
        self._precision = resolve_precision(precision, self._device)
        # NHWC convolutions in the reassemble/fusion/head stages: 0.69x the CPU time of DPT-Hybrid
        # fp32 (benchmarks/NOTES.md); the transformer's linear layers are unaffected.
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._depth_output_kind = depth_output_kind
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile_mode {compile_mode!r}: expected one of {COMPILE_MODES}")
        self._compile_mode = compile_mode
        self._warn = warn
        self._staging = HostStaging(self._device)
        self._tasks: dict[str, _TaskRunner] = {}
        for task, model, input_size, resize in (
            ("depth", depth_model, depth_input_size, depth_resize),
            ("segmentation", segmentation_model, segmentation_input_size, segmentation_resize),
        ):
            if model is not None:
                self._tasks[task] = self._make_runner(task, model, input_size, resize, mean, std)

    def _make_runner(self, task, model, input_size, resize, mean, std) -> _TaskRunner:
        input_size = as_height_width(input_size, resize.multiple)
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1)
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        model = model.to(self._device, memory_format=self._memory_format).eval()
        model.requires_grad_(False)
        # (x/255 - mean)/std folded into one multiply-add: x * scale + offset.
        return _TaskRunner(
            model=model,
            forward=ModelRunner(model, self._compile_mode, self._device, PRECISIONS[self._precision],
                                warn=self._warn, name=f"{task} model"),
            input_size=input_size,
            resize=resize,
            scale=(1.0 / (255.0 * std_t)).to(self._device),
            offset=(-mean_t / std_t).to(self._device),
        )

    @classmethod
    def from_variant(
        cls,
        variant: str,
        tasks: Sequence[str] | str = ("depth",),
        weights: str | None = None,
        segmentation_variant: str | None = None,
        segmentation_weights: str | None = None,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        input_size: int | None = None,
        channels_last: bool = True,
        compile_mode: str = "eager",
        warn: Callable[[str], None] | None = None,
    ) -> "InferenceEngine":
        """Build the models of a registered variant (``dpt_ros.model.VARIANTS``).

        ``weights`` is the depth model's source ("auto" = official checkpoint, None = random
        init); segmentation uses ``segmentation_weights``, or ``weights`` when segmentation is
        the only task.  ``segmentation_variant`` lets a metric depth variant (which has no
        segmentation head) be paired with another variant's segmentation model.
        ``input_size`` overrides the variants' network size for every task.  ``compile_mode`` and
        ``warn``: see the constructor.
        """
        from dpt_ros.model import VARIANTS, build_model

        tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
        unknown = [task for task in tasks if task not in TASKS]
        if not tasks or unknown:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tasks}")

        def task_spec(name: str, task: str):
            if name not in VARIANTS:
                raise ValueError(f"unknown variant {name!r}: expected one of {sorted(VARIANTS)}")
            if task not in VARIANTS[name].tasks:
                raise ValueError(
                    f"variant {name!r} has no {task} model (it has {sorted(VARIANTS[name].tasks)})"
                    + ("; pass segmentation_variant" if task == "segmentation" else "")
                )
            return VARIANTS[name].tasks[task]

        depth_spec = segmentation_spec = None
        depth_model = segmentation_model = None
        if "depth" in tasks:
            depth_spec = task_spec(variant, "depth")
            depth_model = build_model(variant, "depth", weights)
        if "segmentation" in tasks:
            seg_variant = segmentation_variant or variant
            seg_weights = segmentation_weights
            if seg_weights is None and "depth" not in tasks:
                seg_weights = weights
            segmentation_spec = task_spec(seg_variant, "segmentation")
            segmentation_model = build_model(seg_variant, "segmentation", seg_weights)

        first = depth_spec or segmentation_spec
        engine = cls(
            depth_model,
            segmentation_model,
            depth_output_kind=depth_spec.output_kind if depth_spec else "relative_inverse_depth",
            device=device,
            precision=precision,
            channels_last=channels_last,
            compile_mode=compile_mode,
            warn=warn,
            depth_input_size=input_size or (depth_spec.input_size if depth_spec else 384),
            segmentation_input_size=input_size
            or (segmentation_spec.input_size if segmentation_spec else 480),
            depth_resize=depth_spec.resize if depth_spec else DPT_RESIZE,
            segmentation_resize=segmentation_spec.resize if segmentation_spec else DPT_RESIZE,
            mean=first.mean,
            std=first.std,
        )
        if depth_spec and segmentation_spec and (
            tuple(segmentation_spec.mean) != tuple(depth_spec.mean)
            or tuple(segmentation_spec.std) != tuple(depth_spec.std)
        ):
            # Different normalization per task: Depth Anything V2's depth (ImageNet mean/std) with a
            # DPT segmentation model (0.5/0.5).
            runner = engine._tasks["segmentation"]
            engine._tasks["segmentation"] = engine._make_runner(
                "segmentation", runner.model, runner.input_size, runner.resize, segmentation_spec.mean,
                segmentation_spec.std,
            )
        return engine

    # ----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def staging(self) -> HostStaging:
        """The engine's host<->device copies (page-locked buffers reused per shape on a GPU): what
        derives outputs on the device uses it to bring them back."""
        return self._staging

    @property
    def compile_mode(self) -> str:
        return self._compile_mode

    @property
    def compile_status(self) -> dict[str, str]:
        """Per task, what executes the forward pass now ("eager", "torch_compile", "cuda_graph", or
        "eager (<mode> fell back: <reason>)")."""
        return {task: runner.forward.status for task, runner in self._tasks.items()}

    @property
    def depth_output_kind(self) -> str:
        return self._depth_output_kind

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self._tasks)

    def network_size(self, height: int, width: int, task: str) -> tuple[int, int]:
        runner = self._runner(task)
        return network_size(height, width, runner.input_size, runner.resize)

    def _runner(self, task: str) -> _TaskRunner:
        if task not in self._tasks:
            raise ValueError(f"task {task!r} is not enabled in this engine (enabled: {self.tasks})")
        return self._tasks[task]

    # ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def preprocess(self, images, task: str, bgr: bool = False) -> torch.Tensor:
        """The normalized (B, 3, net_h, net_w) float32 batch ``infer`` would feed ``task``'s model.

        All images must map to the same network size.  Exposed for tests and benchmarks.
        """
        images = self._validated_list(images)
        runner = self._runner(task)
        sizes = {network_size(*image.shape[:2], runner.input_size, runner.resize) for image in images}
        if len(sizes) != 1:
            raise ValueError(f"images map to different network sizes {sorted(sizes)}")
        uploaded = self._upload(images)
        return self._network_batch(runner, uploaded, list(range(len(images))), sizes.pop(), bgr)

    @torch.inference_mode()
    def infer(self, images, bgr: bool = False, tasks: Sequence[str] | None = None) -> list[InferenceResult]:
        """Run the enabled tasks on ``images`` (one (H, W, 3) uint8 array or a list of them).

        ``bgr=True`` when the arrays are in BGR channel order (OpenCV, ROS bgr8); the swap happens
        on the device.  ``tasks`` restricts the run to some enabled tasks (None = all): the node
        skips a model whose outputs nobody subscribes to.  Returns one InferenceResult per image,
        in order; a task not run leaves its field None.  Nothing is copied back to the host here:
        see InferenceResult.
        """
        if tasks is not None:
            unknown = [task for task in tasks if task not in self._tasks]
            if unknown:
                raise ValueError(f"tasks {unknown} are not enabled in this engine (enabled: {self.tasks})")
        images = self._validated_list(images)
        clock = _StageClock(self._device)
        results = [InferenceResult(staging=self._staging, clock=clock) for _ in images]
        with clock.measure("preprocess"):
            uploaded = self._upload(images)
        for result, (tensor, row) in zip(results, uploaded):
            result.on_device["image"] = tensor[row].flip(-1) if bgr else tensor[row]
        for task, runner in self._tasks.items():
            if tasks is not None and task not in tasks:
                continue
            for net_size, indices in self._group_by_network_size(images, runner).items():
                with clock.measure("preprocess"):
                    batch = self._network_batch(runner, uploaded, indices, net_size, bgr)
                with clock.measure("inference"):
                    output = self._forward(runner, batch)
                with clock.measure("postprocess"):
                    if task == "depth":
                        self._store_depth(output, runner.resize, images, indices, results)
                    else:
                        self._store_labels(output, images, indices, results)
        return results

    # ----------------------------------------------------------------------------------------
    @staticmethod
    def _validated_list(images) -> list[np.ndarray]:
        if isinstance(images, np.ndarray):
            return [validate_image(images)]
        images = list(images)
        if not images:
            raise ValueError("no images given")
        return [validate_image(image, position) for position, image in enumerate(images)]

    def _upload(self, images: list[np.ndarray]) -> list[tuple[torch.Tensor, int]]:
        """Copy the uint8 images to the device; same-size images travel as one stacked tensor
        (through a reused page-locked buffer on a GPU, asynchronously).

        Returns, per image, (device tensor (N, H, W, 3) uint8, row of this image in it).
        """
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(index)
        placement: list[tuple[torch.Tensor, int]] = [None] * len(images)  # type: ignore[list-item]
        for indices in by_shape.values():
            # ascontiguousarray copies only views with odd strides (e.g. a flipped array).
            stacked = np.stack([images[i] for i in indices]) if len(indices) > 1 else \
                np.ascontiguousarray(images[indices[0]])[None]
            on_device = self._staging.upload(stacked)
            for row, index in enumerate(indices):
                placement[index] = (on_device, row)
        return placement

    @staticmethod
    def _group_by_network_size(images, runner: _TaskRunner) -> dict[tuple[int, int], list[int]]:
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(network_size(*image.shape[:2], runner.input_size, runner.resize), []).append(index)
        return groups

    def _network_batch(self, runner, uploaded, indices, net_size, bgr) -> torch.Tensor:
        """uint8 HWC on the device -> normalized float32 (B, 3, H, W) at ``net_size``, stored in the
        engine's memory format (channels_last by default) so the forward pass needs no copy."""
        # Rows of one uploaded tensor (images of one input size) are resized together.
        groups: dict[int, tuple[torch.Tensor, list[int], list[int]]] = {}
        for index in indices:
            tensor, row = uploaded[index]
            _, rows, members = groups.setdefault(id(tensor), (tensor, [], []))
            rows.append(row)
            members.append(index)
        pieces: list[torch.Tensor] = []
        order: list[int] = []
        for tensor, rows, members in groups.values():
            chunk = tensor if rows == list(range(tensor.shape[0])) else tensor[rows]
            chunk = chunk.permute(0, 3, 1, 2)
            if bgr:
                chunk = chunk.flip(1)
            chunk = chunk.float()
            if tuple(chunk.shape[-2:]) != tuple(net_size):
                chunk = F.interpolate(chunk, size=net_size, mode="bicubic", align_corners=False)
            pieces.append(chunk)
            order.extend(members)
        batch = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        if order != list(indices):  # back to the caller's order (pieces were grouped by size)
            batch = batch[[order.index(i) for i in indices]]
        return (batch * runner.scale + runner.offset).contiguous(memory_format=self._memory_format)

    def _forward(self, runner: _TaskRunner, batch: torch.Tensor) -> torch.Tensor:
        return runner.forward(batch)

    def _store_depth(self, output, resize: ResizeRule, images, indices, results) -> None:
        if output.ndim == 4 and output.shape[1] == 1:
            output = output[:, 0]
        if output.ndim != 3 or output.shape[0] != len(indices):
            raise RuntimeError(f"depth model returned shape {tuple(output.shape)}, expected (B, H, W)")
        for size, positions in _positions_by_size(images, indices).items():
            resized = _rows(output, positions).unsqueeze(1)
            if tuple(resized.shape[-2:]) != size:
                resized = F.interpolate(resized, size=size, mode=resize.depth_mode,
                                        align_corners=resize.depth_align_corners)
            for row, position in enumerate(positions):
                results[indices[position]].on_device["depth"] = resized[row, 0]

    def _store_labels(self, output, images, indices, results) -> None:
        if output.ndim != 4 or output.shape[0] != len(indices):
            raise RuntimeError(
                f"segmentation model returned shape {tuple(output.shape)}, expected (B, C, H, W)"
            )
        if output.shape[1] > 256:
            raise RuntimeError(f"{output.shape[1]} classes do not fit uint8 labels")
        for size, positions in _positions_by_size(images, indices).items():
            labels = resized_argmax(_rows(output, positions), size, dtype=torch.uint8)
            for row, position in enumerate(positions):
                results[indices[position]].on_device["labels"] = labels[row]


def _positions_by_size(images, indices) -> dict[tuple[int, int], list[int]]:
    """Positions within ``indices`` grouped by the original (H, W) of their image."""
    groups: dict[tuple[int, int], list[int]] = {}
    for position, index in enumerate(indices):
        groups.setdefault(tuple(images[index].shape[:2]), []).append(position)
    return groups


def _rows(batch: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """``batch[positions]``, without the copy when that is the whole batch in order (150-class
    logits at 640x480 are 184 MB)."""
    return batch if positions == list(range(batch.shape[0])) else batch[positions]
