"""Engine and pipeline speed without ROS: one camera image in, outputs on the host out.

For every variant (``dpt_ros.model.VARIANTS``, random weights), precision and compile mode, on
one image (default 640x480):

* ``engine``:   ``InferenceEngine.infer`` with both tasks (segmentation from the variant, or
                the model sharing its backbone, as the node picks it) and the host copies of
                depth and labels; also the engine's own stage times (CUDA events on a GPU);
* ``pipeline``: ``pipeline.process_frames`` with every output requested (metric depth, relative
                depth, both colour images, labels, the xyz+rgb+label cloud): what dpt_node
                computes per frame before publishing;
* ``cameras``:  (``--cameras N``) N different frames through one ``infer`` call (one forward per
                task for the batch) against N calls of one frame each, depth only, frames/s of
                both and their ratio: the engine-level gain of the node's multi-camera batching.

The first call of each engine (compilation, graph capture, cuDNN selection) is untimed and
reported.  Runs of one row are consecutive; compare rows of the same run.

    python benchmarks/engine.py --device cuda                      # all variants, fp32+bf16, eager
    python benchmarks/engine.py --device cuda --compile eager,cuda_graph,torch_compile
    python benchmarks/engine.py --quick --device cpu --variants dpt_tiny
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time

import numpy as np
import torch

from bench_util import DEPTH_SCALE, DEPTH_SHIFT, benchmark_device, format_table, percentile, use_checkout

use_checkout()

import dpt_ros.model as dpt_model  # noqa: E402
from dpt_ros.inference import InferenceEngine  # noqa: E402
from dpt_ros.model_config import describe_compile, segmentation_variant_for  # noqa: E402
from dpt_ros.model_runner import COMPILE_MODES  # noqa: E402
from dpt_ros.pipeline import Intrinsics, OutputRequest, PipelineSettings, process_frames  # noqa: E402

PRECISIONS = ("fp32", "fp16", "bf16")
EVERY_OUTPUT = OutputRequest(depth_metric=True, depth_relative=True, depth_colored=True, labels=True,
                             labels_colored=True, cloud=True)


@dataclasses.dataclass
class Row:
    variant: str
    tasks: str
    precision: str
    compile: str  # what ran, per task with the reason of a fallback (model_config.describe_compile)
    ran: str  # the same in a few words: "eager", "cuda_graph", "cuda_graph -> eager", ...
    first_call_s: float
    engine_p50_ms: float
    engine_p90_ms: float
    stages_p50_ms: dict
    pipeline_p50_ms: float
    pipeline_p90_ms: float
    batched_fps: float = float("nan")
    separate_fps: float = float("nan")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="all", help="comma-separated variant names, or 'all' (default: "
                        "every variant in dpt_ros.model.VARIANTS)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated fp32, fp16, bf16")
    parser.add_argument("--compile", default="eager", help="comma-separated compile modes: "
                        f"{', '.join(COMPILE_MODES)} (cuda_graph falls back to eager off CUDA, as in the node)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--image", default="640x480", help="input WIDTHxHEIGHT (default %(default)s)")
    parser.add_argument("--cameras", type=int, default=4, help="cameras of the batching comparison (0: skip)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per row (default: cuda 30, cpu 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs after the first call "
                        "(default: cuda 5, cpu 1)")
    parser.add_argument("--quick", action="store_true", help="2 runs, 1 warm-up: a smoke test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    args.device = benchmark_device(parser, args.device)
    args.variants = list(dpt_model.VARIANTS) if args.variants == "all" else _split(args.variants)
    unknown = [v for v in args.variants if v not in dpt_model.VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(dpt_model.VARIANTS)}")
    args.precisions = _split(args.precisions)
    if not args.precisions or any(p not in PRECISIONS for p in args.precisions):
        parser.error(f"--precisions: choose from {', '.join(PRECISIONS)}")
    args.compile = _split(args.compile)
    if not args.compile or any(m not in COMPILE_MODES for m in args.compile):
        parser.error(f"--compile: choose from {', '.join(COMPILE_MODES)}")
    try:
        args.width, args.height = (int(v) for v in args.image.lower().split("x"))
    except ValueError:
        parser.error(f"--image must be WIDTHxHEIGHT, got {args.image!r}")
    on_cuda = args.device == "cuda"
    if args.runs is None:
        args.runs = 2 if args.quick else (30 if on_cuda else 3)
    if args.warmup is None:
        args.warmup = 1 if (args.quick or not on_cuda) else 5
    if args.runs < 1 or args.warmup < 0 or args.cameras < 0:
        parser.error("--runs must be >= 1, --warmup and --cameras >= 0")
    return args


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def scene(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth synthetic RGB frame with a few edges (outputs vary across it)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 37.0 + y / 53.0)], axis=-1) * 255
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    image[top:top + height // 3, left:left + width // 3] = rng.integers(0, 256, 3)
    return image.astype(np.uint8)


def tasks_of(variant: str) -> tuple[tuple[str, ...], str | None]:
    """(tasks, segmentation variant): both when some segmentation model shares the backbone."""
    segmentation_variant = segmentation_variant_for(variant)
    return (("depth",), None) if segmentation_variant is None else (("depth", "segmentation"), segmentation_variant)


def timed(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
    return times


def measure(variant: str, precision: str, mode: str, args, frames: list[np.ndarray]) -> Row:
    tasks, segmentation_variant = tasks_of(variant)
    warnings = []
    engine = InferenceEngine.from_variant(variant, tasks=tasks, weights=None, segmentation_variant=segmentation_variant,
                                          segmentation_weights=None, device=args.device, precision=precision,
                                          compile_mode=mode, warn=warnings.append)
    image = frames[0]
    height, width = image.shape[:2]
    camera = Intrinsics(0.8 * width, 0.8 * width, (width - 1) / 2, (height - 1) / 2)
    settings = PipelineSettings(depth_scale=DEPTH_SCALE, depth_shift=DEPTH_SHIFT)

    def engine_call():
        results = engine.infer(image)
        return [(result.depth, result.labels) for result in results], results[0].timings_ms

    def pipeline_call():
        return process_frames(engine, [image], settings, [EVERY_OUTPUT], [camera])

    started = time.perf_counter()
    engine_call()
    pipeline_call()
    first_call_s = time.perf_counter() - started
    for warning in warnings:
        print(f"#   {variant} {precision} {mode}: {warning}", flush=True)

    # engine and pipeline calls alternate, so a slow patch of a shared machine hits both alike
    engine_ms, pipeline_ms, stages = [], [], {}
    for index in range(args.warmup + args.runs):
        started = time.perf_counter()
        _, timings = engine_call()
        between = time.perf_counter()
        pipeline_call()
        if index >= args.warmup:
            engine_ms.append((between - started) * 1e3)
            pipeline_ms.append((time.perf_counter() - between) * 1e3)
            for stage, value in timings.items():
                stages.setdefault(stage, []).append(value)
    ran = " / ".join(sorted({status.split(" (")[1].split(" fell back")[0] + " -> eager" if "fell back" in status
                             else status for status in engine.compile_status.values()}))
    row = Row(variant=variant, tasks="+".join(tasks), precision=precision, compile=describe_compile(engine), ran=ran,
              first_call_s=first_call_s, engine_p50_ms=percentile(engine_ms, 50),
              engine_p90_ms=percentile(engine_ms, 90),
              stages_p50_ms={stage: percentile(values, 50) for stage, values in stages.items()},
              pipeline_p50_ms=percentile(pipeline_ms, 50), pipeline_p90_ms=percentile(pipeline_ms, 90))
    if args.cameras:
        row.batched_fps, row.separate_fps = camera_batching(engine, frames[:args.cameras], args)
    del engine
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return row


def camera_batching(engine: InferenceEngine, frames: list[np.ndarray], args) -> tuple[float, float]:
    """Frames/s of N frames through one infer call against N calls of one frame (depth only, the
    depth images copied to the host), after one untimed batched call (a new shape compiles)."""
    def batched():
        [result.depth for result in engine.infer(frames, tasks=("depth",))]

    def separate():
        for frame in frames:
            engine.infer(frame, tasks=("depth",))[0].depth

    batched()
    batched_ms = timed(batched, args.runs, args.warmup)
    separate_ms = timed(separate, args.runs, args.warmup)
    return len(frames) * 1e3 / percentile(batched_ms, 50), len(frames) * 1e3 / percentile(separate_ms, 50)


def tables(rows: list[Row], args) -> str:
    headers = ["variant", "tasks", "prec", "compile", "first call s", "engine p50", "engine p90", "preprocess",
               "inference", "postprocess", "pipeline p50", "pipeline p90", "pipeline - engine"]
    lines = [[r.variant, r.tasks, r.precision, r.ran, r.first_call_s, r.engine_p50_ms, r.engine_p90_ms,
              r.stages_p50_ms.get("preprocess", float("nan")), r.stages_p50_ms.get("inference", float("nan")),
              r.stages_p50_ms.get("postprocess", float("nan")), r.pipeline_p50_ms, r.pipeline_p90_ms,
              r.pipeline_p50_ms - r.engine_p50_ms] for r in rows]
    text = format_table(headers, lines)
    if args.cameras:
        batching = [[r.variant, r.precision, r.ran, r.batched_fps, r.separate_fps, r.batched_fps / r.separate_fps]
                    for r in rows]
        text += "\n\n" + format_table(["variant", "prec", "compile", f"batched {args.cameras} frames/s",
                                       f"{args.cameras} calls frames/s", "batched / separate"], batching)
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"# engine benchmark {time.strftime('%Y-%m-%d %H:%M:%S')}: {args.device} ({device_name}), torch "
          f"{torch.__version__}, {torch.get_num_threads()} CPU threads; {args.width}x{args.height} rgb, random "
          f"weights; first call untimed, then {args.warmup} warm-up + {args.runs} runs per row; ms unless noted; "
          "engine = infer + host copies of depth and labels, its stages from the engine's own clock; pipeline = "
          "every output of one frame on the host", flush=True)
    # Random weights are the slow part of building a model on the CPU: build each once and share it
    # between the engines of every precision and compile mode.
    dpt_model.build_model = functools.lru_cache(maxsize=None)(dpt_model.build_model)
    frames = [scene(args.height, args.width, seed=args.seed + index) for index in range(max(1, args.cameras))]
    rows = []
    for variant in args.variants:
        for mode in args.compile:
            for precision in args.precisions:
                row = measure(variant, precision, mode, args, frames)
                rows.append(row)
                batching = (f", {args.cameras} cameras batched/separate {row.batched_fps / row.separate_fps:.2f}"
                            if args.cameras else "")
                print(f"#   {variant} {precision} {row.ran}: first call {row.first_call_s:.1f} s, engine "
                      f"{row.engine_p50_ms:.2f} ms, pipeline {row.pipeline_p50_ms:.2f} ms{batching}", flush=True)
        dpt_model.build_model.cache_clear()
        if args.device == "cuda":
            torch.cuda.empty_cache()
    print()
    print(tables(rows, args))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(args={k: v for k, v in vars(args).items()}, rows=[dataclasses.asdict(r) for r in rows]),
                      fh, indent=1)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
