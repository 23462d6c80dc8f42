"""Model-only speed: our DPT (dpt_ros.model) against transformers' DPT, same weights, same input.

For each variant and task, our network is built with random weights (``build_model(...,
weights=None, seed=...)``: every tensor randomized, outputs of order one), exported with
``to_hf_state_dict`` and loaded strictly into ``DPTForDepthEstimation`` /
``DPTForSemanticSegmentation`` configured by the parity tests' ``hf_config_kwargs``; a Depth
Anything V2 variant is compared with ``DepthAnythingForDepthEstimation``, loaded with
``from_pretrained`` from our export written as a hub directory (``test/support/transformers_reference.
transformers_depth_anything``), at its own network size 518 by default (there transformers and the
reference resize the position embedding alike).  Both run
the same input on the same device, under the same ``torch.autocast`` for fp16 / bf16 (weights
stay fp32), in ``torch.inference_mode``.  Runs alternate (ours, theirs, ours, ...) after a
warm-up, so drifts of a shared machine hit both sides alike.  Every row also reports
max |ours - theirs| on the warm-up outputs: a speed-up is only worth something if the answer is
the same.

    python benchmarks/model.py                               # large + hybrid, defaults per device
    python benchmarks/model.py --variants dpt_tiny --quick   # seconds, a smoke test
    python benchmarks/model.py --device cuda --precisions bf16 --batches 1 --runs 100
    python benchmarks/model.py --device cuda --compile cuda_graph   # ours through CUDA-graph replay
    python benchmarks/model.py --variants depth_anything_v2_vits,depth_anything_v2_vitb   # at 518x518

Ours runs through ``dpt_ros.model_runner.ModelRunner``, the object InferenceEngine runs the model
with, in the ``--compile`` mode (eager, torch_compile, cuda_graph); the first call of a
compiled or captured shape is untimed and its cost printed.  transformers always runs eagerly.
When fp32 rows are present, a second table compares transformers' eager fp32 with ours at each
precision (the "3x transformers eager fp32" target).

On CUDA the table also gives the fraction of the FLOP floor reached: the multiply-adds of the
network (counted by torch's FlopCounterMode on a storage-less copy: DPT-Large depth 384x384 =
256 GMAC, Hybrid = 127 GMAC, matching the ~258 / ~128 usually quoted) at ``--peak-tflops``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time

import torch

from bench_util import REPO, benchmark_device, format_table, percentile, use_checkout

use_checkout()

from dpt_ros.model import DPT, VARIANTS, build_model, get_model_spec, to_hf_state_dict  # noqa: E402
from dpt_ros.model.variants import HYBRID  # noqa: E402
from dpt_ros.model_runner import COMPILE_MODES, ModelRunner  # noqa: E402

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# H100 SXM dense bf16/fp16 tensor-core peak is ~990 TFLOPS; 800 is a sustained figure.  For fp32
# rows the fraction is against this same number (fp32 without TF32 peaks far lower).
DEFAULT_PEAK_TFLOPS = 800.0
# Fewest timed runs per side when --row-budget-s cuts a row short.
MIN_RUNS = 3
# Default input side of DPT variants (DPT-Large/Hybrid's depth network size).
DPT_SIZE = 384


@dataclasses.dataclass
class Row:
    variant: str
    task: str
    precision: str
    batch: int
    size: int
    ours_p50_ms: float
    ours_p90_ms: float
    theirs_p50_ms: float
    theirs_p90_ms: float
    compile_mode: str  # ours: what ran (ModelRunner.status)
    speedup: float  # theirs p50 / ours p50: > 1 means ours is faster
    max_abs_diff: float
    max_abs_theirs: float
    gmac: float  # multiply-adds of one forward of the whole batch
    ours_floor_fraction: float  # FLOP floor time / ours p50 (NaN off CUDA)
    theirs_floor_fraction: float
    ours_runs_ms: list
    theirs_runs_ms: list


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="dpt_large,dpt_hybrid",
                        help="comma-separated variant names (dpt_large, dpt_hybrid, dpt_base, dpt_tiny, "
                        "depth_anything_v2_vits, ...) or 'all' (every variant in dpt_ros.model.VARIANTS; one "
                        "without a transformers twin is skipped with the reason)")
    parser.add_argument("--tasks", default="depth", help="comma-separated: depth, segmentation")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated fp32, fp16, bf16 (default: fp32,bf16 on cpu - fp16 is very slow "
                             "there - and fp32,fp16,bf16 on cuda)")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,4; --quick: 1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--size", type=int, default=None,
                        help="square input side, a multiple of 32 for DPT and 14 for Depth Anything V2 "
                             f"(default: {DPT_SIZE} for DPT, the variant's network size - 518 - for Depth Anything V2)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per side (default: cpu 5, cuda 50)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs per side (default: cpu 1, cuda 10)")
    parser.add_argument("--row-budget-s", type=float, default=None,
                        help="cap on the timed runs of one row: fewer runs (never below 3) when "
                             "runs x (ours + theirs) would exceed this many seconds (default: cpu 60, cuda "
                             "no cap); large at batch 4 takes tens of seconds per forward on a small CPU")
    parser.add_argument("--quick", action="store_true", help="3 runs, 1 warm-up, batch 1: a smoke test")
    parser.add_argument("--peak-tflops", type=float, default=DEFAULT_PEAK_TFLOPS,
                        help="device peak for the FLOP-floor column (default 800: H100 bf16, sustained)")
    parser.add_argument("--memory-format", choices=("channels_last", "contiguous"), default="channels_last",
                        help="layout of OUR model and input; channels_last is what InferenceEngine runs "
                        "(default: %(default)s); transformers always runs its default (contiguous)")
    parser.add_argument("--hf-attention", choices=("sdpa", "eager"), default="sdpa",
                        help="transformers' attention implementation (its default is sdpa)")
    parser.add_argument("--compile", default="eager",
                        help="how OUR forward runs: eager, torch_compile or cuda_graph (CUDA only; "
                        "falls back to eager elsewhere, as the node does), or several comma-separated "
                        "(each variant is built once for all) (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    args.device = benchmark_device(parser, args.device)
    on_cuda = args.device == "cuda"
    args.variants = list(VARIANTS) if args.variants == "all" else _split(args.variants)
    args.compile = _split(args.compile)
    if not args.compile or any(mode not in COMPILE_MODES for mode in args.compile):
        parser.error(f"--compile: choose from {', '.join(COMPILE_MODES)}")
    args.tasks = _split(args.tasks)
    args.precisions = _split(args.precisions or ("fp32,fp16,bf16" if on_cuda else "fp32,bf16"))
    unknown = [p for p in args.precisions if p not in PRECISIONS]
    if unknown:
        parser.error(f"unknown precision(s) {unknown}; choose from {list(PRECISIONS)}")
    args.batches = [int(b) for b in _split(args.batches or ("1" if args.quick else "1,4"))]
    if args.runs is None:
        args.runs = 3 if args.quick else (50 if on_cuda else 5)
    if args.warmup is None:
        args.warmup = 1 if (args.quick or not on_cuda) else 10
    if args.row_budget_s is None:
        args.row_budget_s = 0.0 if on_cuda else 60.0
    if args.size is not None and args.size <= 0:
        parser.error("--size must be positive")
    for variant in args.variants:
        for task in args.tasks:
            try:
                spec = get_model_spec(variant, task)
            except ValueError as error:
                parser.error(str(error))
            size = input_side(spec, args.size)
            if size % spec.input_multiple:
                parser.error(f"--size {size}: {variant} takes multiples of {spec.input_multiple}")
    if args.runs < 1 or args.warmup < 1:
        parser.error("--runs and --warmup must be at least 1 (the warm-up outputs are compared)")
    return args


def _split(text: str) -> list:
    return [item.strip() for item in text.split(",") if item.strip()]


# ------------------------------------------------------------------------------------------- models
def input_side(spec, size) -> int:
    """``--size``, or by default DPT_SIZE for DPT and the network size (518) for Depth Anything V2."""
    if size:
        return size
    return spec.task.height_width[0] if spec.is_depth_anything else DPT_SIZE


def benchmark_spec(variant: str, task: str, size: int):
    """The network spec to benchmark.  transformers' hybrid only runs at its position-embedding
    size, so for another ``--size`` both sides are built with the embedding at that size (the
    rest of the network is unchanged)."""
    spec = get_model_spec(variant, task)
    if spec.backbone.kind == HYBRID and spec.backbone.image_size != size:
        spec = spec.replace(backbone=dict(image_size=size))
    return spec


# Where the repository keeps the function giving transformers' DPTConfig arguments for one of
# our specs (the one the parity tests check): reused, not duplicated.  First match wins.
HF_CONFIG_HELPER_MODULES = ("dpt_ros.model.testing", "test_model_parity")


def hf_config_helper():
    """The repository's ``hf_config_kwargs(spec) -> dict`` (test/ is put on the path for it)."""
    import importlib

    test_dir = str(REPO / "test")
    if test_dir not in sys.path:
        sys.path.append(test_dir)
    for name in HF_CONFIG_HELPER_MODULES:
        try:
            helper = getattr(importlib.import_module(name), "hf_config_kwargs", None)
        except ImportError:
            continue
        if helper is not None:
            return helper
    raise ImportError(f"no hf_config_kwargs in any of {HF_CONFIG_HELPER_MODULES}")


def build_pair(spec, seed: int, device: torch.device, hf_attention: str):
    """(ours, theirs): our network with random weights and transformers' with the same weights."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTForSemanticSegmentation

    ours = build_model(spec, weights=None, seed=seed)
    if spec.is_depth_anything:
        return ours.to(device), depth_anything_reference(ours, hf_attention).to(device)
    hf_config_kwargs = hf_config_helper()
    config = DPTConfig(**hf_config_kwargs(spec))
    if hf_attention == "eager":
        # Only when asked: transformers picks sdpa by default where it can, and refuses "sdpa"
        # set explicitly for the hybrid's BiT sub-model (which has no attention at all).
        config._attn_implementation = "eager"
    cls = DPTForSemanticSegmentation if spec.is_segmentation else DPTForDepthEstimation
    with torch.device("meta"):  # every tensor comes from our state dict: skip transformers' init
        theirs = cls(config)
    theirs.load_state_dict(to_hf_state_dict(ours), strict=True, assign=True)
    leftover = [name for name, t in list(theirs.named_parameters()) + list(theirs.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(f"transformers' model has tensors our export does not set: {leftover[:5]}")
    theirs = theirs.float().eval().requires_grad_(False)
    if theirs.config._attn_implementation != hf_attention:
        raise RuntimeError(f"transformers chose attention {theirs.config._attn_implementation!r}, "
                           f"not {hf_attention!r}")
    return ours.to(device), theirs.to(device)


def depth_anything_reference(ours, hf_attention: str):
    """transformers' DepthAnythingForDepthEstimation with ``ours``'s weights, through a hub-style
    directory and from_pretrained; its Dinov2 backbone runs ``hf_attention`` (sdpa is what
    from_pretrained picks)."""
    import tempfile

    test_dir = str(REPO / "test")
    if test_dir not in sys.path:
        sys.path.append(test_dir)
    from support.transformers_reference import transformers_depth_anything

    with tempfile.TemporaryDirectory(prefix="dpt_ros_bench_") as directory:
        theirs = transformers_depth_anything(ours, directory)
    if theirs.backbone.config._attn_implementation != hf_attention:
        theirs.backbone.set_attn_implementation(hf_attention)
    if theirs.backbone.config._attn_implementation != hf_attention:
        raise RuntimeError(f"transformers' backbone runs attention {theirs.backbone.config._attn_implementation!r}, "
                           f"not {hf_attention!r}")
    return theirs.requires_grad_(False)


def forward_macs(spec, batch: int, size: int) -> float:
    """Multiply-adds (in units of 1e9) of one forward of our network, counted on ``meta`` tensors
    (no storage, no compute) by torch's FlopCounterMode (which counts 2 FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = DPT(spec).eval()
        x = torch.empty(batch, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2e9


def theirs_output(out, is_segmentation: bool) -> torch.Tensor:
    return out.logits if is_segmentation else out.predicted_depth


# ------------------------------------------------------------------------------------------- timing
def timed_call(fn, device: torch.device):
    """(milliseconds, result) of ``fn()``; on CUDA measured by events between two synchronizes,
    so the time covers exactly the kernels of this call."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        result = fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end), result
    started = time.perf_counter()
    result = fn()
    return (time.perf_counter() - started) * 1e3, result


def measure_row(ours, theirs, spec, precision: str, batch: int, size: int, args, device: torch.device,
                macs_per_image: float, mode: str) -> Row:
    generator = torch.Generator().manual_seed(args.seed + batch)
    x = torch.randn(batch, 3, size, size, generator=generator).to(device)
    dtype = PRECISIONS[precision]
    is_seg = spec.is_segmentation

    memory_format = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format
    ours = ours.to(memory_format=memory_format)
    x_ours = x.contiguous(memory_format=memory_format)

    runner = ModelRunner(ours, mode, device, dtype, warn=lambda text: print(f"#   {text}", flush=True),
                         name=f"{spec.name} {precision}")

    def run_ours():
        with torch.inference_mode():
            return runner(x_ours)

    def run_theirs():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            return theirs_output(theirs(pixel_values=x), is_seg)

    if mode != "eager":
        first_ms, _ = timed_call(run_ours, device)
        print(f"#   {precision} batch {batch}: first call ({runner.status}) {first_ms / 1e3:.1f} s", flush=True)
    ours_out = theirs_out = None
    for _ in range(args.warmup):
        ours_warm_ms, ours_out = timed_call(run_ours, device)
        theirs_warm_ms, theirs_out = timed_call(run_theirs, device)
    diff = (ours_out.float() - theirs_out.float()).abs().max().item()
    scale = theirs_out.float().abs().max().item()
    del ours_out, theirs_out

    runs = args.runs
    if args.row_budget_s > 0:
        pair_s = (ours_warm_ms + theirs_warm_ms) / 1e3
        runs = max(min(MIN_RUNS, args.runs), min(args.runs, int(args.row_budget_s // pair_s)))
    ours_ms, theirs_ms = [], []
    for _ in range(runs):  # alternate, so a slow patch of the machine hits both sides
        ours_ms.append(timed_call(run_ours, device)[0])
        theirs_ms.append(timed_call(run_theirs, device)[0])

    ours_p50, theirs_p50 = percentile(ours_ms, 50), percentile(theirs_ms, 50)
    gmac = macs_per_image * batch
    floor_ms = 2 * gmac * 1e9 / (args.peak_tflops * 1e12) * 1e3
    on_cuda = device.type == "cuda"
    return Row(
        variant=spec.variant.name, task=spec.task.task, precision=precision, batch=batch, size=size,
        ours_p50_ms=ours_p50, ours_p90_ms=percentile(ours_ms, 90),
        theirs_p50_ms=theirs_p50, theirs_p90_ms=percentile(theirs_ms, 90),
        compile_mode=runner.status, speedup=theirs_p50 / ours_p50, max_abs_diff=diff, max_abs_theirs=scale, gmac=gmac,
        ours_floor_fraction=floor_ms / ours_p50 if on_cuda else math.nan,
        theirs_floor_fraction=floor_ms / theirs_p50 if on_cuda else math.nan,
        ours_runs_ms=ours_ms, theirs_runs_ms=theirs_ms)


# ------------------------------------------------------------------------------------------- report
def environment(args, device: torch.device) -> dict:
    import timm
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return dict(
        device=str(device), device_name=name, cpu_threads=torch.get_num_threads(), torch=torch.__version__,
        timm=timm.__version__, transformers=transformers.__version__, hf_attention=args.hf_attention,
        compile=args.compile, size=args.size, runs=args.runs, warmup=args.warmup, peak_tflops=args.peak_tflops,
        date=time.strftime("%Y-%m-%d %H:%M:%S"), command=" ".join(["python", "benchmarks/model.py"] + sys.argv[1:]))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def table(rows, on_cuda: bool) -> str:
    headers = ["variant", "task", "prec", "batch", "runs", "size", "ours p50", "ours p90", "theirs p50",
               "theirs p90", "theirs/ours", "max|diff|", "max|theirs|"]
    if on_cuda:
        headers += ["GMAC", "floor% ours", "floor% theirs"]
    headers.append("ours ran")
    lines = []
    for r in rows:
        line = [r.variant, r.task, r.precision, r.batch, len(r.ours_runs_ms), r.size, r.ours_p50_ms, r.ours_p90_ms,
                r.theirs_p50_ms, r.theirs_p90_ms, r.speedup, f"{r.max_abs_diff:.2e}", r.max_abs_theirs]
        if on_cuda:
            line += [r.gmac, 100 * r.ours_floor_fraction, 100 * r.theirs_floor_fraction]
        line.append(r.compile_mode.split(" (")[0] + (" (fell back)" if "fell back" in r.compile_mode else ""))
        lines.append(line)
    return format_table(headers, lines)


def against_theirs_fp32(rows) -> str:
    """transformers' eager fp32 p50 / ours p50 at every precision, per variant/task/batch: the
    speed a user gets by switching from running transformers' DPT as shipped to this package."""
    fp32 = {(r.variant, r.task, r.batch): r.theirs_p50_ms for r in rows if r.precision == "fp32"}
    lines = [[r.variant, r.task, r.batch, r.precision, r.compile_mode, fp32[(r.variant, r.task, r.batch)],
              r.ours_p50_ms, fp32[(r.variant, r.task, r.batch)] / r.ours_p50_ms]
             for r in rows if (r.variant, r.task, r.batch) in fp32]
    return format_table(["variant", "task", "batch", "ours prec", "ours ran", "theirs fp32 p50", "ours p50",
                         "theirs fp32/ours"], lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    env = environment(args, device)
    print(f"# model benchmark {env['date']}: {env['device']} ({env['device_name']}), {env['cpu_threads']} CPU "
          f"threads, torch {env['torch']}, timm {env['timm']}, transformers {env['transformers']} "
          f"(attention: {args.hf_attention}); ours: compile {', '.join(args.compile)}")
    budget = f" (fewer, >= {MIN_RUNS}, past {args.row_budget_s:g} s a row)" if args.row_budget_s > 0 else ""
    print(f"# square inputs (size column), {args.warmup} warm-up + {args.runs} timed runs per side{budget}, "
          "alternating; times in ms; theirs/ours > 1 means ours is faster")
    if device.type == "cuda":
        print(f"# floor% = time at {args.peak_tflops:g} TFLOPS for the network's MACs / measured p50")
    sys.stdout.flush()

    rows, skipped = [], {}
    for variant in args.variants:
        for task in args.tasks:
            if task not in VARIANTS[variant].tasks:
                continue
            size = input_side(get_model_spec(variant, task), args.size)
            spec = benchmark_spec(variant, task, size)
            macs = forward_macs(spec, 1, size)
            print(f"# {spec.name}: {macs:.1f} GMAC per image at {size}x{size}", flush=True)
            try:
                ours, theirs = build_pair(spec, args.seed, device, args.hf_attention)
            except Exception as error:  # e.g. a variant transformers has no twin for
                skipped[spec.name] = f"{type(error).__name__}: {error}"
                print(f"#   skipped, no transformers reference: {skipped[spec.name]}", flush=True)
                continue
            for mode in args.compile:
                for precision in args.precisions:
                    for batch in args.batches:
                        row = measure_row(ours, theirs, spec, precision, batch, size, args, device, macs, mode)
                        rows.append(row)
                        print(f"#   {precision} batch {batch} {row.compile_mode}: ours {row.ours_p50_ms:.1f} ms, "
                              f"theirs {row.theirs_p50_ms:.1f} ms, x{row.speedup:.2f}, max|diff| "
                              f"{row.max_abs_diff:.2e}", flush=True)
            del ours, theirs
            if device.type == "cuda":
                torch.cuda.empty_cache()

    print()
    print(table(rows, device.type == "cuda"))
    if any(r.precision == "fp32" for r in rows):
        print()
        print(against_theirs_fp32(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(environment=env, rows=[dataclasses.asdict(r) for r in rows], skipped=skipped), fh,
                      indent=1)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
