"""Inference engine: uint8 images in, depth and ADE20K labels at input resolution out.

ROS-free.  Everything after the upload happens on the engine's device: channel order, resize to
the network size, normalization, the forward pass(es), resize back, argmax.  Only the uint8 input
goes up and only the final float32 depth / uint8 labels come back, which keeps host<->device
traffic at its minimum and the CPU free for the ROS side.

Preprocessing follows each model's reference code (``dpt_ros.resize_rules``): RGB, keep the aspect
ratio and resize bicubically to the network size of the variant's rule (DPT: scale as little as
possible to multiples of 32; Depth Anything V2: at least the network size, multiples of 14), then
``(x / 255 - mean) / std``.  Depth is resized back as the rule says (DPT bicubic, Depth Anything V2
bilinear with aligned corners), segmentation logits bilinearly before the argmax
(align_corners=False), as in the reference evaluations.
"""
from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dpt_ros.model_runner import COMPILE_MODES, ModelRunner
from dpt_ros.resize_rules import DPT_RESIZE, ResizeRule, as_height_width, network_size

TASKS = ("depth", "segmentation")
DEPTH_OUTPUT_KINDS = ("relative_inverse_depth", "metric_depth")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Upper bound on elements of one resized-logits chunk (fp32): 64 Mi elements = 256 MiB.  The full
# 150-class map of a 1080p image would be 1.2 GiB, so larger images are argmaxed in channel chunks.
_LOGITS_CHUNK_ELEMENTS = 1 << 26


@dataclass
class InferenceResult:
    """Outputs for one input image, at the input's resolution.

    ``depth``: (H, W) float32, relative inverse depth (unitless) or metres, see
    ``InferenceEngine.depth_output_kind``; None when depth is off.
    ``labels``: (H, W) uint8 ADE20K class index 0..149 (objectInfo150 order, 0 = wall); None when
    segmentation is off.
    ``timings_ms``: wall time of the "preprocess", "inference" and "postprocess" stages of the
    ``infer`` call that produced this result (images batched together share one set of timings).
    ``on_device``: only with ``infer(..., keep_on_device=True)``: the same data as torch tensors on
    the engine's device - "image" (H, W, 3) uint8 RGB input, "depth", "labels" - so outputs derived
    from them (metric depth, point cloud) can be computed there and copied back once, finished.
    """

    depth: np.ndarray | None = None
    labels: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    on_device: dict[str, torch.Tensor] = field(default_factory=dict)


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
    """Accumulates wall time per stage; waits for the device so GPU work lands in its stage."""

    def __init__(self, device: torch.device):
        self._device = device
        self.totals_ms = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}

    @contextlib.contextmanager
    def measure(self, stage: str):
        start = time.perf_counter()
        yield
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        self.totals_ms[stage] += (time.perf_counter() - start) * 1e3


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
    def infer(self, images, bgr: bool = False, tasks: Sequence[str] | None = None,
              keep_on_device: bool = False) -> list[InferenceResult]:
        """Run the enabled tasks on ``images`` (one (H, W, 3) uint8 array or a list of them).

        ``bgr=True`` when the arrays are in BGR channel order (OpenCV, ROS bgr8); the swap happens
        on the device.  ``tasks`` restricts the run to some enabled tasks (None = all): the node
        skips a model whose outputs nobody subscribes to.  Returns one InferenceResult per image,
        in order; a task not run leaves its field None.  ``keep_on_device`` also returns the
        device tensors (``InferenceResult.on_device``).
        """
        if tasks is not None:
            unknown = [task for task in tasks if task not in self._tasks]
            if unknown:
                raise ValueError(f"tasks {unknown} are not enabled in this engine (enabled: {self.tasks})")
        images = self._validated_list(images)
        results = [InferenceResult() for _ in images]
        clock = _StageClock(self._device)
        with clock.measure("preprocess"):
            uploaded = self._upload(images)
        if keep_on_device:
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
                        self._store_depth(output, runner.resize, images, indices, results, keep_on_device)
                    else:
                        self._store_labels(output, images, indices, results, keep_on_device)
        for result in results:
            result.timings_ms = dict(clock.totals_ms)
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
        """Copy the uint8 images to the device; same-size images travel as one stacked tensor.

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
            host = torch.from_numpy(stacked)
            if self._device.type == "cuda":
                host = host.pin_memory()
            on_device = host.to(self._device, non_blocking=True)
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

    def _store_depth(self, output, resize: ResizeRule, images, indices, results, keep_on_device: bool) -> None:
        if output.ndim == 4 and output.shape[1] == 1:
            output = output[:, 0]
        if output.ndim != 3 or output.shape[0] != len(indices):
            raise RuntimeError(f"depth model returned shape {tuple(output.shape)}, expected (B, H, W)")
        for size, positions in _positions_by_size(images, indices).items():
            resized = output[positions].unsqueeze(1)
            if tuple(resized.shape[-2:]) != size:
                resized = F.interpolate(resized, size=size, mode=resize.depth_mode,
                                        align_corners=resize.depth_align_corners)
            on_device = resized[:, 0]
            host = on_device.cpu().numpy()
            for row, position in enumerate(positions):
                results[indices[position]].depth = host[row]
                if keep_on_device:
                    results[indices[position]].on_device["depth"] = on_device[row]

    def _store_labels(self, output, images, indices, results, keep_on_device: bool) -> None:
        if output.ndim != 4 or output.shape[0] != len(indices):
            raise RuntimeError(
                f"segmentation model returned shape {tuple(output.shape)}, expected (B, C, H, W)"
            )
        if output.shape[1] > 256:
            raise RuntimeError(f"{output.shape[1]} classes do not fit uint8 labels")
        for size, positions in _positions_by_size(images, indices).items():
            labels = resized_argmax(output[positions], size).to(torch.uint8)
            host = labels.cpu().numpy()
            for row, position in enumerate(positions):
                results[indices[position]].labels = host[row]
                if keep_on_device:
                    results[indices[position]].on_device["labels"] = labels[row]


def _positions_by_size(images, indices) -> dict[tuple[int, int], list[int]]:
    """Positions within ``indices`` grouped by the original (H, W) of their image."""
    groups: dict[tuple[int, int], list[int]] = {}
    for position, index in enumerate(indices):
        groups.setdefault(tuple(images[index].shape[:2]), []).append(position)
    return groups


def resized_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """argmax over classes of ``logits`` (B, C, h, w) bilinearly resized to ``size``.

    Equals ``interpolate(logits, size).argmax(1)`` (first index wins ties) but resizes a few
    classes at a time when the full resized map would be large, keeping a running maximum.
    """
    batch, classes = logits.shape[:2]
    if tuple(logits.shape[-2:]) == tuple(size):
        # A same-size bilinear resize is the identity; skipping it saves a full pass.
        return logits.argmax(dim=1)
    per_chunk = max(1, _LOGITS_CHUNK_ELEMENTS // max(1, batch * size[0] * size[1]))
    if per_chunk >= classes:
        resized = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return resized.argmax(dim=1)
    best_value = best_index = None
    for start in range(0, classes, per_chunk):
        resized = F.interpolate(
            logits[:, start : start + per_chunk], size=size, mode="bilinear", align_corners=False
        )
        value, index = resized.max(dim=1)
        if best_value is None:
            best_value, best_index = value, index
        else:
            better = value > best_value  # strict: an earlier class keeps a tie
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index + start, best_index)
    return best_index
