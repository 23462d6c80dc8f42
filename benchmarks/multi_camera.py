"""Multi-camera batching: one dpt_node serving N cameras against N dpt_nodes with one camera each.

One run measures two configurations, one after the other, on the same variant, precision,
device, input size and outputs:

* **batched**: one installed ``dpt_node`` with ``cameras:=[cam0, ..., camN-1]``; frames of all
  cameras that wait together go through the model as one batch;
* **separate**: N ``dpt_node`` processes, node K in namespace ``.../camK`` serving that camera
  alone (the usual one-node-per-camera deployment), all sharing the machine (and the GPU).

Inputs and outputs have the same names in both (``<ns>/camK/image`` -> ``<ns>/camK/depth/image``),
so the same two peers (benchmarks/node_peers.py) drive both: a ``stream`` process, a rig of N
cameras publishing camera_info + rgb8 frames all at the same moment, round after round, at 1.5x
the rate at which the fastest camera's outputs come back (so a node always finds a frame of each
of its cameras waiting when it becomes free: it is saturated and, batched, gets full batches; see
node_peers.py for why not a fixed rate or a closed loop), and a ``subscriber`` process receiving
every camera's outputs and ``InferenceStats``.
A frame counts when all its outputs and its stats arrived inside the measuring window
(``--seconds``, after ``--warmup-seconds`` of publishing).  Reported per configuration:
throughput (frames/s summed over cameras), frames per camera (min/max: fairness), the batch sizes
the nodes reported; and the ratio batched / separate.

Only ``depth/image`` (or ``segmentation/labels``) is subscribed by default, so the node computes
just that per frame; ``--outputs all`` subscribes to every output, whose per-frame host work
(colouring, cloud, publishing) is not batched.

On a CPU, and above all on this project's 2-core machine, the separate nodes compete for the same
cores as the one batched node (each with its own torch threads), so the ratio there says little
about the GPU target (4 cameras batched >= 2.5x the throughput of 4 separate nodes): measure that
with ``--device cuda``.

Every process uses config/fastdds_large_shm.xml unless ``--fastdds-profile`` says otherwise
(``''``: the environment's DDS settings), see SHM_PROFILE below.

    python benchmarks/multi_camera.py                          # 4 cameras, dpt_tiny, depth, 640x480
    python benchmarks/multi_camera.py --device cuda --variant dpt_large --precision bf16
    python benchmarks/multi_camera.py --quick --cameras 2      # a smoke test
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from bench_util import (COMPILE_HELP, Processes, default_device, format_table, node_command, node_parameters,
                        output_topics, prepare_run, use_checkout)

use_checkout()

NAMESPACE = "/dpt_bench_multi"
# Each configuration's stats topic per camera, relative to its namespace (see dpt_node's CameraPort).
STATS_TOPICS = {"batched": "dpt_node/{camera}/stats", "separate": "{camera}/dpt_node/stats"}
# Unlike node.py (one frame at a time) this streams continuously: over Fast DDS's default UDP
# path a lost fragment of a 640x480 frame stalls that camera until the writer's next heartbeat
# (3 s; in a first run one camera of two got 3 frames, the other 129), so shared memory is the
# default here.
SHM_PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_large_shm.xml"
# Seconds for the node(s) to load the model and subscribe before the stream gives up.
STARTUP_TIMEOUT = 300.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=4, help="number of cameras (default 4)")
    parser.add_argument("--variant", default="dpt_tiny", help="model.variant of the node(s) (default dpt_tiny)")
    parser.add_argument("--weights", default="", help="model.weights ('' = random weights, the default)")
    parser.add_argument("--tasks", default="depth", choices=("depth", "segmentation", "both"))
    parser.add_argument("--outputs", default=None,
                        help="comma-separated outputs subscribed per camera, or 'all' (default: depth/image "
                             "and/or segmentation/labels, after --tasks)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--compile", default="eager", choices=("eager", "torch_compile", "cuda_graph"), help=COMPILE_HELP)
    parser.add_argument("--input-size", type=int, default=0, help="node input_size (0 = the variant's)")
    parser.add_argument("--size", default="640x480", help="camera image WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--seconds", type=float, default=None, help="measuring window (default 20; quick 4)")
    parser.add_argument("--warmup-seconds", type=float, default=None,
                        help="publishing before the window opens (default 5; quick 3)")
    parser.add_argument("--lead", type=float, default=1.5,
                        help="camera rounds per second as a multiple of the fastest camera's output rate "
                             "(default 1.5; above 1 keeps the node(s) saturated)")
    parser.add_argument("--quick", action="store_true", help="a short window: a smoke test")
    parser.add_argument("--fastdds-profile", default=str(SHM_PROFILE),
                        help="Fast DDS XML profile for every process (FASTRTPS_DEFAULT_PROFILES_FILE); default "
                             "config/fastdds_large_shm.xml, '' = the environment's DDS settings")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: random 1..100)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--keep", default=None, help="keep the processes' logs and raw records in this folder")
    args = parser.parse_args(argv)
    args.device = default_device(args.device)
    args.seconds = args.seconds or (4.0 if args.quick else 20.0)
    args.warmup_seconds = args.warmup_seconds if args.warmup_seconds is not None else 3.0 if args.quick else 5.0
    if args.cameras < 1 or args.lead <= 1.0:
        parser.error("--cameras must be at least 1 and --lead above 1")
    return args


def subscribed_outputs(args) -> list[str]:
    if args.outputs == "all":
        return output_topics(args.variant, args.tasks)
    if args.outputs:
        return [t for t in args.outputs.split(",") if t]
    return {"depth": ["depth/image"], "segmentation": ["segmentation/labels"],
            "both": ["depth/image", "segmentation/labels"]}[args.tasks]


def run_configuration(name: str, args, env: dict, folder: Path, cameras: list[str], topics: list[str]) -> dict:
    """Start subscriber, node(s) and stream for one configuration; return the raw records."""
    namespace = f"{NAMESPACE}/{name}"
    params = node_parameters(args)
    processes = Processes(folder, env)
    paths = {peer: folder / f"{name}_{peer}.json" for peer in ("subscriber", "stream")}
    try:
        processes.start_peer(f"{name}_subscriber", [
            "subscriber", "--ns", namespace, "--cameras", ",".join(cameras), "--topics", ",".join(topics),
            "--stats-topic", STATS_TOPICS[name], "--extra-topics", "", "--out", str(paths["subscriber"])])
        if name == "batched":
            nodes = {f"{name}_dpt_node": node_command(namespace, dict(params, cameras=f"[{', '.join(cameras)}]"))}
        else:
            nodes = {f"{name}_dpt_node_{camera}": node_command(f"{namespace}/{camera}", params) for camera in cameras}
        started = {log: processes.start(log, command) for log, command in nodes.items()}
        code = processes.run_peer(f"{name}_stream", [
            "stream", "--ns", namespace, "--cameras", ",".join(cameras), "--size", args.size,
            "--seconds", str(args.warmup_seconds + args.seconds), "--lead", str(args.lead),
            "--startup-timeout", str(STARTUP_TIMEOUT), "--wait-for-subscribers", ",".join(topics),
            "--out", str(paths["stream"])], timeout=STARTUP_TIMEOUT + args.warmup_seconds + args.seconds + 60,
            watch=started)
        for log, process in started.items():
            if process.poll() is not None:
                raise RuntimeError(f"{log} exited with {process.returncode}\n{processes.log(log)}")
        if code != 0:
            raise RuntimeError(f"{name} stream failed ({code})\n{processes.log(f'{name}_stream')}\n"
                               + "\n".join(processes.log(log) for log in started))
    finally:
        processes.stop_all()  # the subscriber, started first, stops last and then writes its records
    return {peer: json.loads(path.read_text()) for peer, path in paths.items()}


def measure(records: dict, cameras: list[str], topics: list[str], window: tuple[int, int]) -> dict:
    """Frames per camera complete (every output and the stats message received) inside the window,
    and the batch sizes those frames went through the model in."""
    subscriber = records["subscriber"]
    arrivals = {t: {int(k): v for k, v in seen.items()} for t, seen in subscriber["arrivals"].items()}
    start, end = window
    frames, batch_sizes = dict.fromkeys(cameras, 0), {}
    for stats in subscriber["stats"]:
        camera = stats["camera"]
        received = [arrivals.get(f"{camera}/{topic}", {}).get(stats["stamp"]) for topic in topics]
        if None not in received and start <= max(received + [stats["received"]]) < end:
            frames[camera] += 1
            batch_sizes[stats["batch_size"]] = batch_sizes.get(stats["batch_size"], 0) + 1
    last_stats = {s["camera"]: s for s in subscriber["stats"]}
    seconds = (end - start) / 1e9
    total = sum(frames.values())
    return dict(frames_per_camera=frames, frames=total, throughput_fps=total / seconds,
                fairness=min(frames.values()) / max(frames.values()) if max(frames.values()) else math.nan,
                batch_sizes=dict(sorted(batch_sizes.items())),
                rounds_published=records["stream"]["rounds"],
                final_round_rate_hz=(records["stream"]["round_rate_hz"] or [math.nan])[-1],
                dropped_by_node={c: s["frames_dropped"] for c, s in last_stats.items()})


def results_table(results: dict, cameras: list[str]) -> str:
    headers = ["configuration", "nodes", "frames", "frames/s", "per camera min", "max", "min/max",
               "batch size: frames"]
    rows = []
    for name, result in results.items():
        per_camera = result["frames_per_camera"].values()
        label = f"batched (1 node, {len(cameras)} cameras)" if name == "batched" else \
            f"separate ({len(cameras)} nodes, 1 camera each)"
        rows.append([label, 1 if name == "batched" else len(cameras), result["frames"], result["throughput_fps"],
                     min(per_camera), max(per_camera), result["fairness"],
                     " ".join(f"{size}:{count}" for size, count in result["batch_sizes"].items()) or "-"])
    return format_table(headers, rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    prepared = prepare_run(args, "dpt_bench_multi_")
    if prepared is None:
        return 2
    env, dds, folder = prepared
    cameras = [f"cam{index}" for index in range(args.cameras)]
    topics = subscribed_outputs(args)
    date = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"# multi-camera benchmark {date}: {len(cameras)} cameras at {args.size}, {args.variant} ({args.tasks}) "
          f"on {args.device} {args.precision} (compile {args.compile}), {dds}, {os.cpu_count()} CPUs; "
          f"records in {folder}", flush=True)

    results = {}
    for name in ("batched", "separate"):
        try:
            records = run_configuration(name, args, env, folder, cameras, topics)
        except (RuntimeError, OSError, ValueError) as error:
            print(f"multi-camera benchmark failed ({name}): {error}", file=sys.stderr)
            return 1
        opens = records["stream"]["start_ns"] + int(args.warmup_seconds * 1e9)
        results[name] = measure(records, cameras, topics, (opens, opens + int(args.seconds * 1e9)))
        if results[name]["frames"] == 0:
            print(f"multi-camera benchmark failed: no complete frame in the {name} window; logs in {folder}",
                  file=sys.stderr)
            return 1
    ratio = results["batched"]["throughput_fps"] / results["separate"]["throughput_fps"]

    print(f"\n# {args.seconds:g} s window after {args.warmup_seconds:g} s of warm-up; all cameras publishing "
          f"together at {args.lead:g}x the fastest camera's output rate; a frame counts when "
          f"{', '.join(topics)} and its stats arrived")
    print(results_table(results, cameras))
    print(f"\nbatched / separate throughput: {ratio:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(date=date, args=vars(args), cameras=cameras, topics=topics, results=results,
                           ratio=ratio), fh, indent=1)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
