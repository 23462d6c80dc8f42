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
    python benchmarks/fleet.py --quick --json out.json   # 2 bags x 6 frames: does the script still work
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import sys
import tempfile
import threading
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
    parser.add_argument("--quick", action="store_true",
                        help="2 bags x 6 frames, no all-core sequential run (the test of this script)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", type=Path, help="generate bags and outputs here and keep them")
    args = parser.parse_args(argv)
    if args.quick:
        args.bags, args.frames, args.skip_threaded = 2, 6, True
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


class DescendantCpu:
    """CPU seconds (user + system) of this process's descendants by kind, sampled from /proc every
    0.2 s while the block runs (a process's last sample counts: a short-lived one may be missed).
    Ray's local instance runs as children of this process: its system processes (GCS, raylet,
    agents, monitors), idle worker processes it starts ahead, and the workers (BagWorker actors)."""

    def __init__(self):
        self.last: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")

    def __enter__(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        self.thread.join()

    def _run(self):
        while not self.stop.wait(0.2):
            self._sample()

    def _sample(self):
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                    parents[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / self.tick)
                except (OSError, IndexError, ValueError):
                    continue  # exited meanwhile
        mine = {os.getpid()}
        changed = True
        while changed:
            children = {pid for pid, (ppid, _) in parents.items() if ppid in mine and pid not in mine}
            changed = bool(children)
            mine |= children
        for pid in mine - {os.getpid()}:
            kind = self.last.get(pid, ("", 0.0))[0]
            if kind in ("", "other", "ray idle workers"):  # "ray::IDLE" until it becomes an actor; an exited one is nameless
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                kind = self._kind(command) if command.strip() else kind or "other"
            self.last[pid] = (kind, parents[pid][1])

    @staticmethod
    def _kind(command: str) -> str:
        if "BagWorker" in command:
            return "workers"
        if command.startswith("ray::IDLE"):
            return "ray idle workers"  # started ahead by Ray; may still become a worker
        return "ray system" if "ray" in command else "other"

    def seconds(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for kind, seconds in self.last.values():
            totals[kind] = totals.get(kind, 0.0) + seconds
        return totals


def run_fleet(config) -> dict:
    begin = time.perf_counter()
    driver_before = resource.getrusage(resource.RUSAGE_SELF)
    with DescendantCpu() as cpu:
        report = evaluate_fleet(config)
    driver_after = resource.getrusage(resource.RUSAGE_SELF)
    whole_s = time.perf_counter() - begin
    timing = report["timing"]
    assert report["bags"]["done"] == report["bags"]["total"], report["failures"]
    rows = report["per_bag"]
    return {"frame_loop_s_per_bag": sum(r["wall_s"] for r in rows) / len(rows),
            "s_per_bag": sum(r["worker_s"] for r in rows) / len(rows),"frames": timing["frames_processed"], "start_s": timing["ray_start_s"] + timing["workers_ready_s"],
            "evaluating_s": timing["evaluating_s"], "whole_s": whole_s, "ray_start_s": timing["ray_start_s"],
            "workers_ready_s": timing["workers_ready_s"], "ray_overhead_per_bag_s": timing["ray_overhead_per_bag_s"],
            "workers": report["ray"]["workers"],
            "cpu_s": {**cpu.seconds(), "driver": (driver_after.ru_utime + driver_after.ru_stime)
                      - (driver_before.ru_utime + driver_before.ru_stime)}}


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
    cpu = fleet["cpu_s"]
    ray_own = cpu.get("ray system", 0.0) + cpu.get("ray idle workers", 0.0)
    print("CPU seconds during the fleet run: " + ", ".join(f"{kind} {seconds:.1f}" for kind, seconds in cpu.items())
          + f" (Ray's own processes: {ray_own / cpu['workers']:.0%} of the workers')")
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "environment": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "sequential": {str(k): v for k, v in sequential.items()}, "fleet": fleet,
            "ratios": {str(k): v for k, v in ratios.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
