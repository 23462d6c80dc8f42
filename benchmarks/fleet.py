"""evaluate_bags on Ray against one sequential process: frames per second and their ratio, with
Ray's start-up and per-bag overhead, measured in one run.

Both evaluate the same generated bags (the tests' scenes: 64x48 images, ground-truth depth,
camera_info) with the same per-bag configuration (dpt_tiny with seeded weights, metric depth
through --depth-scale/--depth-shift, depth scored, output bag and report with plots written):

* sequential: this process loads the model once and calls ``evaluate()`` bag after bag (what
  evaluate_bag in a shell loop does, minus its model load per bag), with one torch thread (what
  each worker has: the ratio against it is what the workers add) and with as many as the machine
  has cores (torch's default: on a machine whose cores other processes also use, threads that wait
  for each other make this slower, see NOTES sections 9 and 10);
* fleet: ``evaluate_fleet`` with its embedded local Ray and ``--workers`` workers, each with one
  CPU (one torch thread) and its own model.

"evaluating" is from the first bag handed out to the last result (sequential: the evaluate()
calls); "whole" adds Ray's start-up and the workers' (process start, torch import, model load),
which a fleet of hundreds of bags pays once.  Ray's overhead per bag is the time the driver waits
for a bag minus the time the worker spent on it (handing out, returning, noticing).

    python benchmarks/fleet.py                       # 4 bags x 100 frames, 2 workers
    python benchmarks/fleet.py --bags 8 --frames 200 --workers 2
    python benchmarks/fleet.py --quick --json out.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench_util import REPO, format_table, use_checkout

use_checkout()
# Ray workers import dpt_ros from PYTHONPATH (they are started by Ray, not by this script): the
# checkout's first, as for this process.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
sys.path.insert(1, str(REPO / "test"))  # the tests' bag generator and seeded checkpoints

from support.bags import IMAGE_TOPIC, write_bag, write_tiny_checkpoints  # noqa: E402

from dpt_ros.evaluation import fleet_cli  # noqa: E402
from dpt_ros.evaluation.fleet import evaluate_fleet, per_bag_config, prepared_template  # noqa: E402
from dpt_ros.evaluation.fleet_inputs import BagInput  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bags", type=int, default=4)
    parser.add_argument("--frames", type=int, default=100, help="frames per bag")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-threaded", action="store_true",
                        help="no sequential run with all cores as torch threads")
    parser.add_argument("--quick", action="store_true", help="4 bags x 12 frames (the test of this script)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", type=Path, help="generate bags and outputs here and keep them")
    args = parser.parse_args(argv)
    if args.quick:
        args.bags, args.frames = 4, 12
    return args


def fleet_arguments(bags: Path, out: Path, weights: Path, workers: int) -> list[str]:
    return [str(bags), "--output-dir", str(out), "--image-topic", IMAGE_TOPIC, "--camera-info-topic",
            "/camera/camera_info", "--gt-depth-topic", "/gt/depth", "--variant", "dpt_tiny", "--weights", str(weights),
            "--depth-scale", "0.05", "--depth-shift", "0.1", "--device", "cpu", "--workers", str(workers),
            "--no-progress"]


def run_sequential(config, names: list[str], bags: Path, out: Path, threads: int) -> dict:
    """One process, one model, the bags one after another through evaluate()."""
    import torch

    from dpt_ros.evaluation.run import evaluate
    from dpt_ros.model_config import build_engine

    torch.set_num_threads(threads)
    begin = time.perf_counter()
    engine = build_engine(config.evaluation.model, lambda message: None)
    load_s = time.perf_counter() - begin
    template = prepared_template(config)
    frames, loops, per_bag = 0, [], []
    begin = time.perf_counter()
    for name in names:
        started = time.perf_counter()
        report = evaluate(per_bag_config(template, BagInput(bags / name, name, 0, 0), out), engine=engine)
        per_bag.append(time.perf_counter() - started)
        loops.append(report["timing"]["wall_s"])
        frames += report["counts"]["processed"]
    evaluating_s = time.perf_counter() - begin
    return {"frames": frames, "start_s": load_s, "evaluating_s": evaluating_s, "whole_s": load_s + evaluating_s,
            "threads": torch.get_num_threads(), "frame_loop_s_per_bag": sum(loops) / len(loops),
            "s_per_bag": sum(per_bag) / len(per_bag)}


def run_fleet(config) -> dict:
    begin = time.perf_counter()
    report = evaluate_fleet(config)
    whole_s = time.perf_counter() - begin
    timing = report["timing"]
    assert report["bags"]["done"] == report["bags"]["total"], report["failures"]
    rows = report["per_bag"]
    return {"frame_loop_s_per_bag": sum(r["wall_s"] for r in rows) / len(rows),
            "s_per_bag": sum(r["worker_s"] for r in rows) / len(rows),"frames": timing["frames_processed"], "start_s": timing["ray_start_s"] + timing["workers_ready_s"],
            "evaluating_s": timing["evaluating_s"], "whole_s": whole_s, "ray_start_s": timing["ray_start_s"],
            "workers_ready_s": timing["workers_ready_s"], "ray_overhead_per_bag_s": timing["ray_overhead_per_bag_s"],
            "workers": report["ray"]["workers"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench_fleet_"))
    bags = root / "bags"
    names = [f"bag{k}" for k in range(args.bags)]
    for name in names:
        write_bag(bags / name, "mcap", args.frames)
    weights, _ = write_tiny_checkpoints(root)

    parser = fleet_cli.build_parser()
    sequential_runs = [1] + ([os.cpu_count()] if os.cpu_count() > 1 and not args.skip_threaded else [])
    sequential = {}
    for threads in sequential_runs:
        config = fleet_cli.config_from_args(parser.parse_args(fleet_arguments(bags, root / f"sequential{threads}",
                                                                              weights, 1)))
        sequential[threads] = run_sequential(config, names, bags, root / f"sequential{threads}", threads)
    fleet_config = fleet_cli.config_from_args(parser.parse_args(fleet_arguments(bags, root / "fleet", weights,
                                                                                args.workers)))
    fleet = run_fleet(dataclasses.replace(fleet_config, progress=False))
    for result in (*sequential.values(), fleet):
        result["fps_evaluating"] = result["frames"] / result["evaluating_s"]
        result["fps_whole"] = result["frames"] / result["whole_s"]
    ratios = {threads: {"evaluating": fleet["fps_evaluating"] / result["fps_evaluating"],
                        "whole": fleet["fps_whole"] / result["fps_whole"]} for threads, result in sequential.items()}

    print(f"{args.bags} bags x {args.frames} frames (64x48, dpt_tiny, depth scored, output bag and report "
          f"written), {os.cpu_count()} CPUs")
    rows = [(f"sequential (1 process, {threads} torch thread{'s' if threads > 1 else ''})", result)
            for threads, result in sequential.items()]
    rows.append((f"ray ({fleet['workers']} workers, 1 thread each)", fleet))
    print(format_table(
        ["configuration", "frames", "start-up s", "evaluating s", "frames/s evaluating", "whole s", "frames/s whole",
         "s per bag", "frame loop s per bag"],
        [[name, result["frames"], result["start_s"], result["evaluating_s"], result["fps_evaluating"],
          result["whole_s"], result["fps_whole"], result["s_per_bag"], result["frame_loop_s_per_bag"]]
         for name, result in rows]))
    print()
    for threads, ratio in ratios.items():
        print(f"ray / sequential ({threads} thread{'s' if threads > 1 else ''}) frames/s: "
              f"evaluating {ratio['evaluating']:.2f}, whole run {ratio['whole']:.2f}")
    print(f"Ray start-up: {fleet['ray_start_s']:.2f} s; workers ready (process, torch, model): "
          f"{fleet['workers_ready_s']:.2f} s; Ray overhead per bag: {fleet['ray_overhead_per_bag_s']:.3f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "environment": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "sequential": {str(k): v for k, v in sequential.items()}, "fleet": fleet,
            "ratios": {str(k): v for k, v in ratios.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
