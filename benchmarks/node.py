"""The full path: image message in -> every output published and received, across processes.

Three OS processes talk over DDS (a random ROS_DOMAIN_ID, discovery limited to this host):

* the installed ``dpt_node`` (install/dpt_ros/lib/dpt_ros/dpt_node, the checkout's ``dpt_ros``
  modules first on PYTHONPATH) with depth + segmentation, metric depth through depth.scale /
  depth.shift, coloured outputs and the point cloud on;
* a publisher (benchmarks/node_peers.py) sending camera_info + rgb8 frames at each size, one at a
  time (the next after the node's stats for the previous one): latency of an idle pipeline;
* a subscriber subscribed to every output, recording when each frame's outputs arrived.

Reported per input size: the node's own stage times from ``~/stats`` (decode, preprocess,
inference, postprocess, publish, and its total from receive to last publish), the end-to-end
latency (image stamp = wall time at publish -> last output received in the subscriber process),
the transport share (end-to-end - node total), and the share of "everything beyond the model"
(decode + preprocess + postprocess + publish) relative to inference.  Separately, in one process,
the cost of building and publishing a 640x480 xyzrgb(+label) PointCloud2 (depth_to_xyz ->
pack_cloud -> to_pointcloud2 -> publish), with glibc's default malloc and with dpt_node's tuning.

    python benchmarks/node.py                       # dpt_tiny, 640x480 and 1280x720, 20 frames each
    python benchmarks/node.py --variant dpt_hybrid --frames 5
    python benchmarks/node.py --quick               # a few frames: a smoke test
    python benchmarks/node.py --fastdds-profile config/fastdds_large_shm.xml   # outputs via shared memory
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench_util import (COMPILE_HELP, Processes, default_device, format_table, node_command, node_parameters,
                        output_topics, percentile, prepare_run, use_checkout)

use_checkout()

NAMESPACE = "/dpt_bench"
STAGES = ("decode", "preprocess", "inference", "postprocess", "publish")
BEYOND_MODEL = ("decode", "preprocess", "postprocess", "publish")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="dpt_tiny", help="model.variant of the node (default dpt_tiny)")
    parser.add_argument("--weights", default="", help="model.weights ('' = random weights, the default)")
    parser.add_argument("--tasks", default="both", choices=("depth", "segmentation", "both"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--compile", default="eager", choices=("eager", "torch_compile", "cuda_graph"), help=COMPILE_HELP)
    parser.add_argument("--input-size", type=int, default=0, help="node input_size (0 = the variant's)")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated WIDTHxHEIGHT (default 640x480,1280x720; quick 640x480)")
    parser.add_argument("--frames", type=int, default=None, help="timed frames per size (default 20; quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed frames per size (default 2; quick 1)")
    parser.add_argument("--cloud-iterations", type=int, default=None,
                        help="clouds built and published per malloc mode (default 200; quick 20)")
    parser.add_argument("--frame-timeout", type=float, default=None,
                        help="seconds to wait for one frame's outputs (default 120, quick 30)")
    parser.add_argument("--quick", action="store_true",
                        help="640x480 only, a few frames and clouds: a smoke test")
    parser.add_argument("--fastdds-profile", default=None,
                        help="Fast DDS XML profile for every process (FASTRTPS_DEFAULT_PROFILES_FILE), e.g. "
                             "config/fastdds_large_shm.xml; default: the environment's DDS settings")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: random 1..100)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds for the whole node run (default: 600, quick 120)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--keep", default=None, help="keep the processes' logs and raw records in this folder")
    args = parser.parse_args(argv)
    args.device = default_device(args.device)
    args.frames = args.frames if args.frames is not None else (3 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else 1 if args.quick else 2
    args.cloud_iterations = args.cloud_iterations or (20 if args.quick else 200)
    args.timeout = args.timeout or (120.0 if args.quick else 600.0)
    args.frame_timeout = args.frame_timeout or (30.0 if args.quick else 120.0)
    args.sizes = args.sizes or ("640x480" if args.quick else "640x480,1280x720")
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    return args


def node_command_line(args) -> list[str]:
    params = node_parameters(args)
    # Frames come one at a time: their camera_info has exactly the image's stamp.
    params["camera_info.stamp_tolerance"] = "0.001"
    return node_command(NAMESPACE, params)


def summarize(values: list[float]) -> tuple[float, float]:
    return percentile(values, 50), percentile(values, 99)


def frame_records(publisher: dict, subscriber: dict, topics: list[str]) -> dict[str, list[dict]]:
    """Per size, one record per timed frame: the node's stage times and the end-to-end latency."""
    stats_by_stamp = {s["stamp"]: s for s in subscriber["stats"]}
    arrivals = {t: {int(k): v for k, v in seen.items()} for t, seen in subscriber["arrivals"].items()}
    records = {}
    for size, stamps in publisher["sizes"].items():
        rows = []
        for stamp in stamps:
            stats = stats_by_stamp.get(stamp)
            received = [arrivals[t][stamp] for t in topics if stamp in arrivals.get(t, {})]
            if stats is None or not received:
                continue
            row = {stage: stats[f"{stage}_ms"] for stage in STAGES}
            row["node_total"] = stats["total_ms"]
            row["end_to_end"] = (max(received) - stamp) / 1e6
            row["transport"] = row["end_to_end"] - stats["total_ms"]
            row["beyond_model"] = sum(row[stage] for stage in BEYOND_MODEL)
            row["outputs"] = len(received)
            row["network"] = f"{stats['network_width']}x{stats['network_height']}"
            rows.append(row)
        records[size] = rows
    return records


def node_table(records: dict[str, list[dict]]) -> str:
    sizes = list(records)
    headers = ["stage (ms)"] + [f"{size} {q}" for size in sizes for q in ("p50", "p99")]
    labels = [(s, s) for s in STAGES] + [
        ("node_total", "node total (receive -> published)"),
        ("end_to_end", "end-to-end (stamp -> last output received)"),
        ("transport", "transport (end-to-end - node total)"),
        ("beyond_model", "beyond the model (decode+pre+post+publish)"),
    ]
    rows = []
    for key, label in labels:
        row = [label]
        for size in sizes:
            row += list(summarize([r[key] for r in records[size]]))
        rows.append(row)
    share = ["beyond-model / inference (p50s)"]
    for size in sizes:
        beyond = percentile([r["beyond_model"] for r in records[size]], 50)
        inference = percentile([r["inference"] for r in records[size]], 50)
        share += [f"{100 * beyond / inference:.1f}%", ""]
    rows.append(share)
    return format_table(headers, rows)


def cloud_table(cloud_runs: list[dict]) -> str:
    headers = ["malloc", "points", "xyz p50", "pack p50", "msg p50", "publish p50", "total p50", "total p99",
               "subscriber"]
    rows = []
    for run in cloud_runs:
        st = run["stages_ms"]
        width, height = (int(v) for v in run["size"].split("x"))
        rows.append([("glibc default" if run["malloc"] == "default" else "dpt_node tuning"),
                     f"{width * height} x {run['point_step']} B", percentile(st["xyz"], 50),
                     percentile(st["pack"], 50), percentile(st["message"], 50), percentile(st["publish"], 50),
                     percentile(st["total"], 50), percentile(st["total"], 99),
                     "yes" if run["subscribed"] else "NONE"])
    return format_table(headers, rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    prepared = prepare_run(args, "dpt_bench_node_")
    if prepared is None:
        return 2
    env, dds, folder = prepared
    topics = output_topics(args.variant, args.tasks)
    date = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"# node benchmark {date}: {args.variant} ({args.tasks}) on {args.device} {args.precision} "
          f"(compile {args.compile}), {dds}, {os.cpu_count()} CPUs; records in {folder}", flush=True)

    processes = Processes(folder, env)
    started = time.monotonic()
    try:
        processes.start_peer("subscriber", ["subscriber", "--ns", NAMESPACE, "--topics", ",".join(topics),
                                            "--out", str(folder / "subscriber.json")])
        # 1. The point cloud alone, before the node exists (nothing else competes for the CPU).
        cloud_runs = []
        for malloc in ("default", "node"):
            out = folder / f"cloud_{malloc}.json"
            code = processes.run_peer(f"cloud_{malloc}", [
                "cloud", "--ns", NAMESPACE, "--malloc", malloc, "--iterations", str(args.cloud_iterations),
                "--out", str(out)], timeout=120)
            if code != 0:
                raise RuntimeError(f"cloud case ({malloc}) failed\n{processes.log(f'cloud_{malloc}')}")
            cloud_runs.append(json.loads(out.read_text()))

        # 2. The node, fed by the publisher process.
        node = processes.start("dpt_node", node_command_line(args))
        code = processes.run_peer("publisher", [
            "publisher", "--ns", NAMESPACE, "--sizes", args.sizes, "--frames", str(args.frames),
            "--warmup", str(args.warmup), "--wait-for-subscribers", ",".join(topics),
            "--frame-timeout", str(args.frame_timeout), "--out", str(folder / "publisher.json")],
            timeout=max(10.0, args.timeout - (time.monotonic() - started)), watch={"dpt_node": node})
        if node.poll() is not None:
            raise RuntimeError(f"dpt_node exited with {node.returncode}\n{processes.log('dpt_node')}")
        if code != 0:
            raise RuntimeError(f"publisher failed ({code})\n{processes.log('publisher')}\n{processes.log('dpt_node')}")
    except RuntimeError as error:
        processes.stop_all()
        print(f"node benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        processes.stop_all()

    publisher = json.loads((folder / "publisher.json").read_text())
    subscriber = json.loads((folder / "subscriber.json").read_text())
    records = frame_records(publisher, subscriber, topics)
    missing = {size: len(stamps) - len(records[size]) for size, stamps in publisher["sizes"].items()}
    incomplete = {size: sum(r["outputs"] < len(topics) for r in rows) for size, rows in records.items()}
    if not all(records.values()):
        print(f"node benchmark failed: no complete frame records ({missing})\n{processes.log('dpt_node')}",
              file=sys.stderr)
        return 1

    networks = {size: rows[0]["network"] for size, rows in records.items()}
    print(f"\n# full path, {args.frames} frames per size after {args.warmup} warm-up, one frame in flight; "
          f"outputs: {', '.join(topics)}")
    print("# network input per image size: " + ", ".join(f"{s} -> {n}" for s, n in networks.items()))
    if publisher["lost"] or any(missing.values()) or any(incomplete.values()):
        print(f"# WARNING: {len(publisher['lost'])} frame(s) never completed at the subscriber (left out); "
              f"frames without stats {missing}, frames missing some output {incomplete}")
    print(node_table(records))
    print(f"\n# {args.cloud_iterations} PointCloud2 (xyz, rgb, label) built and published in one process, "
          "a subscriber in another; ms")
    print(cloud_table(cloud_runs))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(date=date, args=vars(args), topics=topics, records=records, cloud=cloud_runs), fh,
                      indent=1)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
