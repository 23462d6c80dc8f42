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

Segmentation post-processing (``--postprocess-only``): labels at the image size from 150-class
logits, per geometry (image <- network) and kind of logits (dpt_tiny's real output on a synthetic
scene; "structured": a few classes with smooth crossing fields), three ways: ``before`` (what
the engine ran until now: resize the channels-last logits, then argmax), ``reference``
(``bilinear_argmax.plain_resized_argmax``: resize every NCHW class plane, then argmax) and
``resized_argmax`` (what the engine runs: argmax at network resolution, exact interpolation only
near class boundaries).  Wall times alternate in one run; ``cpu`` is the process CPU time of
``resized_argmax`` (single-threaded numpy: what it costs whatever else loads the cores).  The
labels of ``resized_argmax`` must equal the reference's at every pixel.

    python benchmarks/ablations.py --variant dpt_hybrid --runs 5
    python benchmarks/ablations.py --postprocess-only --runs 10
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
from dpt_ros.bilinear_argmax import plain_resized_argmax, resized_argmax  # noqa: E402
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


def label_logits(kind: str, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(1, 150, height, width) channels-last float32 logits, as the engine gets them."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "dpt_tiny":
        model = build_model("dpt_tiny", "segmentation", seed=seed).to(memory_format=torch.channels_last).eval()
        y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        scene = torch.stack([x, y, torch.sin(3 * x * y)])[None]  # smooth ramps and curved boundaries
        scene[:, :, height // 4:height // 2, width // 3:2 * width // 3] = torch.tensor([0.8, -0.6, -0.8])[:, None, None]
        with torch.inference_mode():
            return model(scene.contiguous(memory_format=torch.channels_last)).float()
    coarse = torch.randn(1, 150, max(2, height // 16), max(2, width // 16), generator=generator)
    fields = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    fields[:, :8] *= 3
    fields[:, 8:] -= 10
    logits = fields + 0.05 * torch.randn(1, 150, height, width, generator=generator)
    return logits.contiguous(memory_format=torch.channels_last)


def postprocess_ablation(args) -> str:
    rows = []
    for geometry in args.label_geometries.split(","):
        image, network = geometry.split(":")
        width, height = (int(v) for v in image.split("x"))
        net_w, net_h = (int(v) for v in network.split("x"))
        size = (height, width)
        for kind in ("dpt_tiny", "structured"):
            logits = label_logits(kind, net_h, net_w)
            functions = {
                "before": lambda: F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(dim=1)
                if (net_h, net_w) != size else logits.argmax(dim=1),
                "reference": lambda: plain_resized_argmax(logits, size),
                "resized_argmax": lambda: resized_argmax(logits, size),
            }
            cpu_ms = []

            def timed_cpu():
                started = time.process_time()
                result = resized_argmax(logits, size)
                cpu_ms.append((time.process_time() - started) * 1e3)
                return result

            functions["resized_argmax"] = timed_cpu
            with torch.inference_mode():
                reference = functions["reference"]()
                identical = bool(torch.equal(resized_argmax(logits, size), reference))
                differ_before = int((functions["before"]() != reference).sum())
                times = alternate(functions, args.runs, args.warmup)
            before, ref, new = (percentile(times[name], 50) for name in ("before", "reference", "resized_argmax"))
            rows.append([f"{width}x{height} <- {net_w}x{net_h}", kind, before, ref, new,
                         percentile(times["resized_argmax"], 90), percentile(cpu_ms[args.warmup:], 50),
                         before / new, identical, differ_before])
    title = (f"# labels from 150-class logits on cpu ({torch.get_num_threads()} torch threads), {args.warmup} warm-up + "
             f"{args.runs} runs alternating; ms; identical = resized_argmax equals the reference at every pixel; "
             "before != ref = pixels where resizing channels-last logits rounds a near-tie the other way")
    return title + "\n" + format_table(
        ["image <- network", "logits", "before p50", "reference p50", "resized_argmax p50", "p90", "cpu p50",
         "before / new", "identical", "before != ref"], rows)


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
    parser.add_argument("--label-geometries", default="640x480:160x128,640x480:512x384,640x480:640x480",
                        help="post-processing: comma-separated IMAGE:NETWORK sizes (WIDTHxHEIGHT): dpt_tiny at "
                             "640x480, a 384 network, a 480 network (the same size: argmax only); add "
                             "1280x720:864x480 for a 480 network on 720p")
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
