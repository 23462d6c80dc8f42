"""What single optimizations are worth on this machine, measured on our own model (no transformers).

Model variants, timed alternately on one input (median and p90 over ``--runs``):

* ``baseline``      - the model as build_model returns it (timm's fused attention, i.e.
                      torch's scaled_dot_product_attention, NCHW tensors);
* ``manual-attn``   - every timm ``Attention`` switched to its explicit softmax(QK^T)V path
                      (``fused_attn = False``), what SDPA saves;
* ``channels-last`` - weights and input in channels_last memory format (the convolutional
                      decoder, and the hybrid's ResNet, run NHWC kernels);
* ``torch-compile`` - (``--compile``) the channels-last model through the engine's ModelRunner in
                      mode torch_compile (inductor); its one-off compile time is printed.

Host-side cloud work (``--cloud-only``): back-projection and point packing of a 640x480 frame from
numpy arrays (what CPU engines run) against the same functions on CPU torch tensors (the GPU
path's code on the CPU), quiet and again with two busy-looping processes on the cores: the
measurement behind ``pipeline.derives_on_device``.  Both must give identical bytes.

Segmentation post-processing (``--postprocess``): the engine's ``resized_argmax`` (bilinear
resize of the 150-class logits to the image size, then argmax) against the same computation on
channels_last logits; both must give identical labels.

    python benchmarks/ablations.py --variant dpt_hybrid --runs 5
    python benchmarks/ablations.py --postprocess-only
    python benchmarks/ablations.py --variant dpt_hybrid --model-only --compile
    python benchmarks/ablations.py --cloud-only --runs 30
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from bench_util import alternate, busy_processes, format_table, percentile, use_checkout

use_checkout()

from dpt_ros.cloud import pack_cloud  # noqa: E402
from dpt_ros.geometry import depth_to_xyz, depth_to_xyz_torch  # noqa: E402
from dpt_ros.inference import resized_argmax  # noqa: E402
from dpt_ros.model import build_model  # noqa: E402
from dpt_ros.model_runner import ModelRunner  # noqa: E402


def manual_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Switch timm's attention blocks to their explicit (unfused) path, in place."""
    from timm.models.vision_transformer import Attention

    switched = 0
    for module in model.modules():
        if isinstance(module, Attention):
            module.fused_attn = False
            switched += 1
    if not switched:
        raise RuntimeError("no timm Attention module found: the switch would measure nothing")
    return model


def model_ablation(args) -> str:
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    baseline = build_model(args.variant, args.task, seed=0)
    manual = manual_attention(build_model(args.variant, args.task, seed=0))
    nhwc = build_model(args.variant, args.task, seed=0).to(memory_format=torch.channels_last)
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    functions = {"baseline": lambda: baseline(x), "manual-attn": lambda: manual(x),
                 "channels-last": lambda: nhwc(x_nhwc)}
    if args.compile:
        compiled = ModelRunner(build_model(args.variant, args.task, seed=0).to(memory_format=torch.channels_last),
                               "torch_compile", torch.device("cpu"), torch.float32, warn=print)
        functions["torch-compile"] = lambda: compiled(x_nhwc)
    with torch.inference_mode():
        reference = baseline(x)
        if args.compile:
            started = time.perf_counter()
            compiled(x_nhwc)
            print(f"# torch-compile: first call (compiling) {time.perf_counter() - started:.1f} s, "
                  f"then {compiled.status}", flush=True)
        diffs = {name: (fn() - reference).abs().max().item() for name, fn in functions.items()}
        times = alternate(functions, args.runs, args.warmup)
    base = percentile(times["baseline"], 50)
    rows = [[name, percentile(t, 50), percentile(t, 90), percentile(t, 50) / base, f"{diffs[name]:.2e}"]
            for name, t in times.items()]
    title = (f"# {args.variant}/{args.task} {args.size}x{args.size} batch {args.batch} fp32 on cpu "
             f"({torch.get_num_threads()} threads), {args.warmup} warm-up + {args.runs} runs, alternating")
    return title + "\n" + format_table(["config", "p50 ms", "p90 ms", "time / baseline", "max|diff|"], rows)


def postprocess_ablation(args) -> str:
    width, height = (int(v) for v in args.image.split("x"))
    net_w, net_h = (int(v) for v in args.network.split("x"))
    logits = torch.randn(1, 150, net_h, net_w, generator=torch.Generator().manual_seed(0))

    def channels_last():
        resized = F.interpolate(logits.contiguous(memory_format=torch.channels_last), size=(height, width),
                                mode="bilinear", align_corners=False)
        return resized.argmax(dim=1)

    functions = {"resized_argmax (NCHW)": lambda: resized_argmax(logits, (height, width)),
                 "channels_last resize + argmax": channels_last}
    with torch.inference_mode():
        same = bool(torch.equal(functions["resized_argmax (NCHW)"](), channels_last()))
        times = alternate(functions, args.runs, args.warmup)
    base = percentile(times["resized_argmax (NCHW)"], 50)
    rows = [[name, percentile(t, 50), percentile(t, 90), percentile(t, 50) / base] for name, t in times.items()]
    title = (f"# 150-class logits {net_w}x{net_h} -> labels {width}x{height} on cpu, {args.runs} runs; "
             f"identical labels: {same}")
    return title + "\n" + format_table(["segmentation post-processing", "p50 ms", "p90 ms", "time / engine"], rows)


def cloud_ablation(args) -> str:
    import numpy as np

    rng = np.random.default_rng(0)
    depth = rng.uniform(0.3, 10.0, (480, 640)).astype(np.float32)
    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    labels = rng.integers(0, 150, (480, 640), dtype=np.uint8)
    tensors = [torch.from_numpy(a) for a in (depth, rgb, labels)]
    intrinsics = (525.0, 525.0, 319.5, 239.5)
    xyz, xyz_t = depth_to_xyz(depth, *intrinsics), depth_to_xyz_torch(tensors[0], *intrinsics)
    functions = {
        "back-projection numpy": lambda: depth_to_xyz(depth, *intrinsics),
        "back-projection torch": lambda: depth_to_xyz_torch(tensors[0], *intrinsics),
        "pack numpy": lambda: pack_cloud(xyz, rgb, labels),
        "pack torch": lambda: pack_cloud(xyz_t, tensors[1], tensors[2]),
    }
    same = bytes(pack_cloud(xyz, rgb, labels).data) == bytes(pack_cloud(xyz_t, tensors[1], tensors[2]).data)
    with torch.inference_mode():
        quiet = alternate(functions, args.runs, args.warmup)
        with busy_processes(2):
            loaded = alternate(functions, args.runs, args.warmup)
    rows = []
    for step in ("back-projection", "pack"):
        for label, times in (("quiet", quiet), ("2 busy processes", loaded)):
            numpy_ms, torch_ms = (percentile(times[f"{step} {lib}"], 50) for lib in ("numpy", "torch"))
            rows.append([step, label, numpy_ms, torch_ms, torch_ms / numpy_ms])
    title = (f"# 640x480 cloud work on cpu ({torch.get_num_threads()} torch threads), {args.runs} runs alternating; "
             f"identical bytes: {same}")
    return title + "\n" + format_table(["step", "cores", "numpy p50 ms", "torch p50 ms", "torch / numpy"], rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="dpt_hybrid")
    parser.add_argument("--task", default="depth")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--image", default="1280x720", help="post-processing: image WIDTHxHEIGHT")
    parser.add_argument("--network", default="864x480",
                        help="post-processing: logits WIDTHxHEIGHT (default: a 480 network on a 1280x720 image)")
    parser.add_argument("--postprocess-only", action="store_true")
    parser.add_argument("--model-only", action="store_true")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile row (compiles for minutes)")
    parser.add_argument("--cloud-only", action="store_true", help="only the numpy vs torch cloud-work table")
    args = parser.parse_args(argv)
    print(f"# ablations {time.strftime('%Y-%m-%d %H:%M:%S')}, torch {torch.__version__}", flush=True)
    if args.cloud_only:
        print(cloud_ablation(args), flush=True)
        return 0
    if not args.postprocess_only:
        print(model_ablation(args), flush=True)
    if not args.model_only:
        print(postprocess_ablation(args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
