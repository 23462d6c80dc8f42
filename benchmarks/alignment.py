"""Cost of the online aligner per frame at 640x480 (target: under 2 ms on the CPU, so it never
shows next to the model), and of extracting its samples from the sensors' messages.

First table: ``OnlineAligner.update`` (cut to alignment.max_samples, prediction read at the
samples, RANSAC, weighted least squares on the inliers, temporal filter) on a synthetic scene
whose relative prediction is an exact affine image of its inverse depth, with 1 % depth noise and
30 % outliers, for each ``--samples`` count.  The reference, timed alternately with it in the same
run, is one plain least-squares fit (dpt_ros.depth.fit_scale_shift, the bag evaluator's fit,
prediction read at the samples included) on the samples the aligner uses after its max_samples
cut: robustness and filtering cost that many plain fits.  The scale and shift errors show that the
timed work found the right answer (plain least squares on the same samples is also shown: the
outliers pull it off).

Second table: turning a sensor message into samples (sparse_depth), per message: a registered
16UC1 depth image and a reprojected one at 640x480, and a 100 000-point lidar PointCloud2; the
reference is the per-frame conversion of the relative prediction to metres that the node does
anyway (depth.relative_to_metric on 640x480).

Runs with dpt_node's glibc malloc tuning by default (``--malloc default`` without): the
extraction allocates a few MB per message, and with glibc's defaults each such buffer is
unmapped on free and page-faults again on the next message.

Third table: moving the scan's points into the camera frame, geometry.transform_points (written
per coordinate, element-wise numpy on one core) against ``points @ R.T + t`` (an OpenBLAS
product on all cores), quiet and with two busy-looping processes on the cores (``--no-busy``
skips that): why transform_points is not the one-liner.

    python benchmarks/alignment.py                      # 2,000 and 30,000 samples, 300 frames each
    python benchmarks/alignment.py --samples 500,2000,30000 --runs 1000
    python benchmarks/alignment.py --quick --json out.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
from types import SimpleNamespace

import numpy as np

from bench_util import alternate, busy_processes, format_table, percentile, use_checkout

use_checkout()

from dpt_ros.alignment import AlignerSettings, OnlineAligner, prediction_at  # noqa: E402
from dpt_ros.depth import fit_scale_shift, relative_to_metric  # noqa: E402
from dpt_ros.geometry import rigid_transform, transform_points  # noqa: E402
from dpt_ros.sparse_depth import (  # noqa: E402
    DepthSamples, cloud_xyz, point_samples, registered_depth_samples, reprojected_depth_samples)

HEIGHT, WIDTH = 480, 640
CAMERA = (525.0, 525.0, 319.5, 239.5)
SCALE, SHIFT = 2.5e-4, 0.02  # the synthetic model's true map to inverse metres
TARGET_MS = 2.0
# Pose of a lidar (x forward, y left, z up) 10 cm above the camera's optical frame.
LIDAR_IN_CAMERA = (0.0, -0.10, 0.0, 0.5, -0.5, 0.5, 0.5)


def scene_depth() -> np.ndarray:
    """640x480 metres: a floor from 1.5 m (bottom) to 30 m (top), two boxes, a wall."""
    rows = np.linspace(30.0, 1.5, HEIGHT)[:, None] * np.ones((1, WIDTH))
    depth = rows.copy()
    depth[100:300, 400:600] = 9.0
    depth[250:420, 60:260] = 2.5
    return depth


def noisy_samples(depth: np.ndarray, count: int, rng: np.random.Generator) -> DepthSamples:
    u = rng.uniform(-0.5, WIDTH - 0.5, count)
    v = rng.uniform(-0.5, HEIGHT - 0.5, count)
    measured = depth[np.floor(v + 0.5).astype(int), np.floor(u + 0.5).astype(int)]
    measured = measured * (1.0 + 0.01 * rng.standard_normal(count))
    bad = rng.permutation(count)[:round(0.3 * count)]
    measured[bad[: bad.size // 2]] *= rng.uniform(1.5, 4.0, bad.size // 2)
    measured[bad[bad.size // 2:]] *= rng.uniform(0.2, 0.6, bad.size - bad.size // 2)
    return DepthSamples(u, v, measured, (HEIGHT, WIDTH))


def aligner_rows(sample_counts, runs, warmup, settings) -> list[dict]:
    depth = scene_depth()
    prediction = ((1.0 / depth - SHIFT) / SCALE).astype(np.float32)
    rows = []
    for count in sample_counts:
        rng = np.random.default_rng(count)
        sample_sets = [noisy_samples(depth, count, rng) for _ in range(4)]
        # The reference fits the samples the aligner works on, after its max_samples cut.
        used_sets = [samples.subsampled(settings.max_samples) for samples in sample_sets]
        aligner = OnlineAligner(settings)
        frame = {"n": 0, "estimate": None}

        def align():
            samples = sample_sets[frame["n"] % len(sample_sets)]
            frame["estimate"] = aligner.update(prediction, samples, stamp=0.05 * frame["n"])
            frame["n"] += 1

        def least_squares():
            samples = used_sets[frame["n"] % len(used_sets)]
            frame["plain"] = fit_scale_shift(prediction_at(prediction, samples), 1.0 / samples.depth)

        times = alternate({"aligner": align, "least_squares": least_squares}, runs, warmup)
        estimate = frame["estimate"]
        plain_scale, plain_shift = frame["plain"]
        p50 = percentile(times["aligner"], 50)
        reference = percentile(times["least_squares"], 50)
        rows.append(dict(samples=count, used=estimate.samples, inliers=estimate.inliers, state=estimate.state.name,
                         aligner_ms=times["aligner"], least_squares_ms=times["least_squares"],
                         aligner_p50_ms=p50, aligner_p90_ms=percentile(times["aligner"], 90),
                         aligner_p99_ms=percentile(times["aligner"], 99), least_squares_p50_ms=reference,
                         ratio=p50 / reference, target_ratio=p50 / TARGET_MS,
                         scale_error=estimate.scale / SCALE - 1, shift_error=estimate.shift / SHIFT - 1,
                         plain_scale_error=plain_scale / SCALE - 1, plain_shift_error=plain_shift / SHIFT - 1))
    return rows


def depth_message(depth_mm: np.ndarray) -> SimpleNamespace:
    """A sensor_msgs/Image-like 16UC1 message (the fields image_codec reads)."""
    return SimpleNamespace(encoding="16UC1", height=depth_mm.shape[0], width=depth_mm.shape[1],
                           step=depth_mm.strides[0], data=depth_mm.tobytes(), is_bigendian=0)


def lidar_message(count: int, rng: np.random.Generator) -> SimpleNamespace:
    """A PointCloud2-like 360-degree scan: x y z intensity float32 and ring uint16, 20-byte points."""
    azimuth = rng.uniform(-math.pi, math.pi, count)
    elevation = rng.uniform(-0.26, 0.26, count)
    distance = rng.uniform(1.0, 40.0, count)
    point = np.dtype({"names": ["x", "y", "z", "intensity", "ring"], "formats": ["<f4"] * 4 + ["<u2"],
                      "offsets": [0, 4, 8, 12, 16], "itemsize": 20})
    points = np.zeros(count, dtype=point)
    points["x"] = distance * np.cos(elevation) * np.cos(azimuth)
    points["y"] = distance * np.cos(elevation) * np.sin(azimuth)
    points["z"] = distance * np.sin(elevation)
    points["ring"] = np.arange(count) % 32
    fields = [SimpleNamespace(name=name, offset=4 * i, datatype=7, count=1) for i, name in enumerate("xyz")]
    fields += [SimpleNamespace(name="intensity", offset=12, datatype=7, count=1),
               SimpleNamespace(name="ring", offset=16, datatype=4, count=1)]
    return SimpleNamespace(height=1, width=count, point_step=20, row_step=20 * count, fields=fields,
                           data=points.tobytes(), is_bigendian=False, is_dense=True)


def extraction_rows(runs, warmup, max_samples, lidar_points) -> list[dict]:
    rng = np.random.default_rng(0)
    depth = scene_depth()
    depth_mm = np.round(depth * 1000.0).astype(np.uint16)
    depth_mm[rng.random(depth_mm.shape) < 0.2] = 0  # holes, as an RGB-D camera has
    image = depth_message(depth_mm)
    cloud = lidar_message(lidar_points, rng)
    relative = ((1.0 / depth - SHIFT) / SCALE).astype(np.float32)
    # A depth camera 5 cm to the side with its own, slightly different intrinsics.
    depth_camera = (520.0, 520.0, 321.0, 238.0)
    extrinsic = (0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    counts = {}

    def run(name, function):
        def timed():
            counts[name] = function()
        return timed

    functions = {
        "registered 16UC1 depth image": run("registered", lambda: registered_depth_samples(
            image, (HEIGHT, WIDTH), max_samples=max_samples)),
        "reprojected 16UC1 depth image": run("reprojected", lambda: reprojected_depth_samples(
            image, depth_camera, CAMERA, (HEIGHT, WIDTH), extrinsic, max_samples=max_samples)),
        f"lidar PointCloud2, {lidar_points} points": run("lidar", lambda: point_samples(
            cloud, CAMERA, (HEIGHT, WIDTH), LIDAR_IN_CAMERA, max_samples=max_samples, min_depth=0.3)),
        "reference: relative_to_metric 640x480": lambda: relative_to_metric(relative, SCALE, SHIFT),
    }
    times = alternate(functions, runs, warmup)
    reference = percentile(times["reference: relative_to_metric 640x480"], 50)
    rows = []
    for (name, samples_key) in zip(functions, ("registered", "reprojected", "lidar", None)):
        p50 = percentile(times[name], 50)
        samples = counts.get(samples_key) if samples_key else None
        rows.append(dict(source=name, samples=len(samples) if samples is not None else None,
                         available=samples.available if samples is not None else None, times_ms=times[name],
                         p50_ms=p50, p90_ms=percentile(times[name], 90), ratio=p50 / reference))
    return rows


def transform_rows(runs, warmup, lidar_points, busy: bool) -> list[dict]:
    """geometry.transform_points (per coordinate, element-wise numpy) against the one-line
    ``points @ R.T + t`` (an OpenBLAS product, multi-threaded) on a lidar scan, quiet and with two
    busy-looping processes on the cores: the measurement behind transform_points' form."""
    rng = np.random.default_rng(1)
    points = cloud_xyz(lidar_message(lidar_points, rng))
    rotation, translation = rigid_transform(LIDAR_IN_CAMERA)
    functions = {"per coordinate": lambda: transform_points(points, LIDAR_IN_CAMERA),
                 "matmul": lambda: points @ rotation.T + translation}
    difference = float(np.abs(functions["per coordinate"]() - functions["matmul"]()).max())
    loads = [("quiet", None)] + ([("2 busy processes", 2)] if busy else [])
    rows = []
    for label, hogs in loads:
        if hogs:
            with busy_processes(hogs):
                times = alternate(functions, runs, warmup)
        else:
            times = alternate(functions, runs, warmup)
        ours, blas = (percentile(times[name], 50) for name in functions)
        rows.append(dict(cores=label, per_coordinate_ms=times["per coordinate"], matmul_ms=times["matmul"],
                         per_coordinate_p50_ms=ours, matmul_p50_ms=blas, ratio=blas / ours,
                         max_abs_diff=difference))
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default="2000,30000", help="comma-separated sample counts per frame")
    parser.add_argument("--runs", type=int, default=300, help="timed frames per row")
    parser.add_argument("--warmup", type=int, default=20, help="untimed frames per row")
    parser.add_argument("--max-samples", type=int, default=AlignerSettings().max_samples,
                        help="alignment.max_samples (default: the aligner's)")
    parser.add_argument("--lidar-points", type=int, default=100_000, help="points of the lidar scan")
    parser.add_argument("--malloc", choices=("node", "default"), default="node",
                        help="node: dpt_node's glibc tuning (keep_large_buffers_mapped), as inside the node; "
                             "default: glibc's defaults (every multi-MB buffer page-faults again)")
    parser.add_argument("--no-busy", action="store_true",
                        help="skip the transform timing with two busy-looping processes on the cores")
    parser.add_argument("--quick", action="store_true", help="20 frames, 3 warm-up: a smoke test")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.warmup = 20, 3
    args.sample_counts = [int(value) for value in args.samples.split(",")]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.malloc == "node":
        from dpt_ros.processes import keep_large_buffers_mapped

        keep_large_buffers_mapped()
    settings = AlignerSettings(max_samples=args.max_samples)
    print(f"online aligner at {WIDTH}x{HEIGHT}, {args.runs} frames per row ({args.warmup} warm-up), "
          f"max_samples {settings.max_samples}, 30 % outliers, 1 % noise; malloc {args.malloc}; numpy "
          f"{np.__version__}, {platform.processor() or platform.machine()}")
    rows = aligner_rows(args.sample_counts, args.runs, args.warmup, settings)
    print()
    print(format_table(
        ["samples", "used", "inliers", "aligner p50 ms", "p90 ms", "p99 ms", "least sq. p50 ms", "aligner/least sq.",
         f"p50/{TARGET_MS:g} ms target", "scale err %", "shift err %", "least sq. scale err %"],
        [[row["samples"], row["used"], row["inliers"], row["aligner_p50_ms"], row["aligner_p90_ms"],
          row["aligner_p99_ms"], row["least_squares_p50_ms"], row["ratio"], row["target_ratio"],
          100 * row["scale_error"], 100 * row["shift_error"], 100 * row["plain_scale_error"]] for row in rows]))

    extraction = extraction_rows(args.runs, args.warmup, settings.max_samples, args.lidar_points)
    print()
    print(format_table(
        ["sample source (per message)", "samples", "available", "p50 ms", "p90 ms", "x reference"],
        [[row["source"], "-" if row["samples"] is None else row["samples"],
          "-" if row["available"] is None else row["available"], row["p50_ms"], row["p90_ms"], row["ratio"]]
         for row in extraction]))
    transform = transform_rows(args.runs, args.warmup, args.lidar_points, busy=not args.no_busy)
    print()
    print(format_table(
        [f"transform {args.lidar_points} points", "per coordinate p50 ms", "points @ R.T p50 ms",
         "matmul / per coordinate", "max|diff|"],
        [[row["cores"], row["per_coordinate_p50_ms"], row["matmul_p50_ms"], row["ratio"], row["max_abs_diff"]]
         for row in transform]))
    worst = max(row["aligner_p50_ms"] for row in rows)
    print(f"\nslowest aligner p50: {worst:.3f} ms ({'within' if worst <= TARGET_MS else 'over'} the "
          f"{TARGET_MS:g} ms target)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(args=vars(args), settings=dataclasses.asdict(settings), aligner=rows,
                           extraction=extraction, transform=transform), fh, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
