"""How a model's forward pass is executed: eagerly, through torch.compile, or as CUDA graphs (ROS-free).

``ModelRunner(model, mode, device, dtype)`` is a callable ``batch -> float32 output`` that hides the
choice.  The node's inputs have a fixed size per camera, so both accelerated modes work per input
shape: torch.compile with ``dynamic=False`` specialises one graph per shape, and ``cuda_graph``
captures one graph per shape (static input and output buffers, replayed with one launch, which
removes the per-kernel launch cost that dominates a batch-1 ViT on a fast GPU).

Whatever goes wrong with an accelerated mode (no C compiler for inductor, an operator dynamo cannot
trace, capture failing, no CUDA device for ``cuda_graph``) the runner says why once, through
``warn``, and runs eagerly from then on: a robot keeps its depth images, only slower.
``status`` tells what is actually running.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch

COMPILE_MODES = ("eager", "torch_compile", "cuda_graph")
# Each captured CUDA graph keeps its own static input/output buffers and activation pool on the GPU;
# a node sees one shape per camera resolution, so a handful is plenty and a bound keeps memory flat.
MAX_CAPTURED_SHAPES = 8
# Runs before capture on the capture stream: the first call may select kernels (cuDNN/cuBLAS
# heuristics, lazy module state) and allocate workspaces, which must not happen inside the capture.
_CAPTURE_WARMUP_RUNS = 2

_log = logging.getLogger(__name__)


class ModelRunner:
    """Runs ``model`` on a batch under autocast at ``dtype`` and returns the float32 output."""

    def __init__(self, model: torch.nn.Module, mode: str, device: torch.device, dtype: torch.dtype,
                 warn: Callable[[str], None] | None = None, name: str = "model"):
        if mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {mode!r}: expected one of {COMPILE_MODES}")
        self._model = model
        self._device = device
        self._dtype = dtype
        self._warn = warn or _log.warning
        self._name = name
        self._mode = mode
        self._fallback_reason = ""
        self._compiled = None
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._shape_limit_warned = False
        if mode == "cuda_graph" and device.type != "cuda":
            self._fall_back(f"cuda_graph needs a CUDA device, this engine runs on {device}")
        elif mode == "torch_compile":
            try:
                # dynamic=False: one specialised graph per input shape (the node's shapes are fixed).
                self._compiled = torch.compile(model, dynamic=False)
            except Exception as error:  # compile() itself rarely fails; tracing happens at the first call
                self._fall_back(f"torch.compile failed: {type(error).__name__}: {error}")

    @property
    def status(self) -> str:
        """What runs now: the mode, or "eager (<mode> fell back: <reason>)"."""
        if self._fallback_reason:
            return f"eager ({self._mode} fell back: {self._fallback_reason})"
        return self._mode

    @property
    def fell_back(self) -> bool:
        return bool(self._fallback_reason)

    def _fall_back(self, reason: str) -> None:
        self._fallback_reason = reason
        self._compiled = None
        self._graphs.clear()
        self._warn(f"{self._name}: {self._mode} is not usable, running eagerly instead: {reason}")

    def _autocast(self, cache_enabled: bool = True):
        # Autocast's weight-cast cache must be off while capturing a CUDA graph: cached casts made
        # during capture would live in the graph's private memory pool (torch.cuda.graph docs).
        return torch.autocast(self._device.type, dtype=self._dtype, enabled=self._dtype != torch.float32,
                              cache_enabled=cache_enabled)

    def eager(self, batch: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            output = self._model(batch)
        return output.float()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self._fallback_reason or self._mode == "eager":
            return self.eager(batch)
        if self._mode == "torch_compile":
            return self._run_compiled(batch)
        return self._run_graph(batch)

    # ------------------------------------------------------------------------------ torch.compile
    def _run_compiled(self, batch: torch.Tensor) -> torch.Tensor:
        try:
            with self._autocast():
                output = self._compiled(batch)
            return output.float()
        except Exception as error:
            # Tracing/compiling happens at the first call of each new shape; any failure there
            # (missing compiler, unsupported operator, out of memory while autotuning) lands here.
            self._fall_back(f"torch.compile failed: {type(error).__name__}: {_first_line(error)}")
            return self.eager(batch)

    # ------------------------------------------------------------------------------ CUDA graphs
    def _run_graph(self, batch: torch.Tensor) -> torch.Tensor:
        key = (tuple(batch.shape), tuple(batch.stride()), batch.dtype)
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= MAX_CAPTURED_SHAPES:
                if not self._shape_limit_warned:
                    self._shape_limit_warned = True
                    self._warn(f"{self._name}: {MAX_CAPTURED_SHAPES} input shapes already captured as CUDA "
                               f"graphs; shape {tuple(batch.shape)} and any further new shape run eagerly")
                return self.eager(batch)
            try:
                entry = self._capture(batch)
            except Exception as error:
                self._fall_back(f"CUDA graph capture failed: {type(error).__name__}: {_first_line(error)}")
                return self.eager(batch)
            self._graphs[key] = entry
        graph, static_input, static_output = entry
        static_input.copy_(batch)
        graph.replay()
        # A copy: the next replay overwrites static_output while the caller may still hold this one.
        return static_output.float() if static_output.dtype != torch.float32 else static_output.clone()

    def _capture(self, batch: torch.Tensor):
        static_input = batch.clone()  # keeps the batch's strides (channels_last stays channels_last)
        # Warm-up and capture on one stream: cuBLAS/cuDNN handles and workspaces are per stream and
        # are created at their first use, which must not happen inside the capture.
        stream = torch.cuda.Stream(self._device)
        stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(stream):
            for _ in range(_CAPTURE_WARMUP_RUNS):
                with self._autocast(cache_enabled=False):
                    self._model(static_input)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the node's other threads (DDS callbacks) are not this capture's business.
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            with self._autocast(cache_enabled=False):
                static_output = self._model(static_input)
        torch.cuda.current_stream(self._device).wait_stream(stream)
        return graph, static_input, static_output


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""
