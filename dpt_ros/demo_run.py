"""`make demo`: demo_camera -> dpt_node -> files, with a one-line summary per second.

Starts demo_camera and dpt_node from the colcon install space as separate processes (as
`ros2 launch dpt_ros dpt.launch.py demo:=true` would), records what dpt_node publishes under
--output (depth and label PNGs, the cloud as PLY, stats as JSON lines), and stops --duration
seconds after the first processed frame (loading the model may take minutes on a busy CPU; it
gives up after --startup-timeout) or on Ctrl-C.

Official weights are used when they are cached or can be downloaded; otherwise (offline machine)
the demo says so loudly and runs the same pipeline with random weights (``--weights ''`` asks for
them).  ``--variant`` picks the depth model, e.g.
``make demo DEMO_ARGS="--variant depth_anything_v2_metric_hypersim_vits"``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image, PointCloud2

from dpt_ros.cloud import from_pointcloud2, write_ply
from dpt_ros.colorize import colorize_depth
from dpt_ros.msg import InferenceStats, LabelInfo
from dpt_ros.processes import stop_process

NAMESPACE = "/demo"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="dpt_hybrid_nyu",
                        help="depth variant, e.g. dpt_hybrid_nyu or depth_anything_v2_metric_hypersim_vits "
                             "(metric), dpt_hybrid or depth_anything_v2_vits (relative) (default: %(default)s)")
    parser.add_argument("--segmentation-variant", default="dpt_hybrid",
                        help="segmentation variant (Depth Anything V2 has none of its own) (default: %(default)s)")
    parser.add_argument("--tasks", default="both", choices=("depth", "segmentation", "both"))
    parser.add_argument("--weights", default="auto",
                        help="'auto' (official if cached or reachable, else random weights), '' (random weights) "
                             "or a path/URL")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--input-size", type=int, default=None,
                        help="network input size (a multiple of 32 for DPT, of 14 for Depth Anything V2); default: "
                             "the variant's on a GPU, about 256 on a CPU so the demo shows several frames a minute")
    parser.add_argument("--rate", type=float, default=2.0, help="camera rate in Hz")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--depth-scale", type=float, default=0.0,
                        help="relative models: depth.scale for metric depth and points (0 = not set)")
    parser.add_argument("--depth-shift", type=float, default=0.0, help="relative models: depth.shift")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds to run after the first processed frame; 0 = until Ctrl-C")
    parser.add_argument("--startup-timeout", type=float, default=600.0,
                        help="seconds to wait for the first processed frame (model loading) before giving up")
    parser.add_argument("--output", type=Path, default=Path("output/demo"))
    args = parser.parse_args(argv)
    from dpt_ros.model import VARIANTS

    for name in (args.variant, args.segmentation_variant):
        if name not in VARIANTS:  # here, not as a dpt_node start-up failure in its log
            parser.error(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return args


def predicts_metric_depth(variant: str) -> bool:
    """Whether ``variant``'s depth model gives metres by itself (DPT's KITTI/NYU models, Depth
    Anything V2's metric ones); relative models need --depth-scale for depth/image and points."""
    from dpt_ros.model import VARIANTS

    depth = VARIANTS[variant].tasks.get("depth")
    return depth is not None and depth.is_metric


def cpu_network_size(variants: list[str], tasks: tuple[str, ...], about: int = 256) -> int:
    """A network size near ``about`` that every model of the run takes (DPT: multiples of 32,
    Depth Anything V2: of 14; both: of 224)."""
    from dpt_ros.model import VARIANTS

    multiple = math.lcm(*(VARIANTS[variant].tasks[task].resize.multiple for variant, task in zip(variants, tasks)))
    return max(multiple, round(about / multiple) * multiple)


def official_weights_reachable(variants: list[str], tasks: tuple[str, ...]) -> bool:
    """True when every official checkpoint needed is cached or downloads now."""
    from dpt_ros.model import VARIANTS
    from dpt_ros.model.errors import WeightsError
    from dpt_ros.model.weights_source import download_checkpoint

    for variant, task in zip(variants, tasks):
        spec = VARIANTS[variant].tasks[task]
        if spec.checkpoint_url is None:
            print(f"[demo] {variant} has no official {task} checkpoint", flush=True)
            return False
        try:
            download_checkpoint(spec.checkpoint_url, expected_sha256_prefix=spec.sha256_prefix)
        except WeightsError as error:
            print(f"[demo] {error}", flush=True)
            return False
    return True


class Recorder:
    """Subscribes to dpt_node's outputs and writes the newest of each to disk."""

    def __init__(self, node, output: Path):
        self.output = output
        self.counts: dict[str, int] = {}
        self.last_stats: InferenceStats | None = None
        self.last_frame_stats: InferenceStats | None = None  # the latest of a processed frame
        self.stats_file = open(output / "stats.jsonl", "w")
        qos = QoSProfile(depth=5)
        node.create_subscription(Image, f"{NAMESPACE}/depth/image", lambda m: self.on_depth(m, "depth"), qos)
        node.create_subscription(Image, f"{NAMESPACE}/depth/relative", lambda m: self.on_depth(m, "relative"), qos)
        node.create_subscription(Image, f"{NAMESPACE}/segmentation/colored", self.on_labels_colored, qos)
        node.create_subscription(Image, f"{NAMESPACE}/segmentation/labels", self.on_labels, qos)
        node.create_subscription(PointCloud2, f"{NAMESPACE}/points", self.on_points, qos)
        node.create_subscription(InferenceStats, f"{NAMESPACE}/dpt_node/stats", self.on_stats, qos)
        node.create_subscription(LabelInfo, f"{NAMESPACE}/segmentation/label_info", self.on_label_info,
                                 QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def on_depth(self, msg: Image, kind: str) -> None:
        self.count(kind)
        values = np.frombuffer(bytes(msg.data), dtype="<f4").reshape(msg.height, msg.width)
        np.save(self.output / f"{kind}.npy", values)
        colored = colorize_depth(values, inverse=(kind == "depth"))
        cv2.imwrite(str(self.output / f"{kind}.png"), cv2.cvtColor(colored, cv2.COLOR_RGB2BGR))

    def on_labels(self, msg: Image) -> None:
        self.count("labels")
        labels = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)[:, : msg.width]
        cv2.imwrite(str(self.output / "labels.png"), labels)

    def on_labels_colored(self, msg: Image) -> None:
        rgb = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.width, 3)
        cv2.imwrite(str(self.output / "segmentation.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def on_points(self, msg: PointCloud2) -> None:
        self.count("points")
        write_ply(self.output / "cloud.ply", from_pointcloud2(msg))

    def on_stats(self, msg: InferenceStats) -> None:
        self.count("stats")
        self.last_stats = msg  # counters; sizes and times only in a processed frame's stats
        if msg.batch_size:
            self.last_frame_stats = msg
        record = {field: getattr(msg, field) for field in msg.get_fields_and_field_types() if field != "header"}
        record["stamp"] = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.stats_file.write(json.dumps(record) + "\n")
        self.stats_file.flush()

    def on_label_info(self, msg: LabelInfo) -> None:
        (self.output / "label_info.json").write_text(json.dumps(
            {"model_variant": msg.model_variant, "ignore_id": msg.ignore_id,
             "classes": [{"id": i, "name": n, "color": f"#{c:06x}"}
                         for i, (n, c) in enumerate(zip(msg.class_names, msg.colors))]}, indent=1))

    def processed(self) -> bool:
        """Whether dpt_node has processed a frame (its stats also come while it only rejects)."""
        return self.last_frame_stats is not None

    def summary(self, elapsed: float) -> str:
        s, f = self.last_stats, self.last_frame_stats
        if s is None or f is None:
            return f"[demo] {elapsed:5.1f} s: waiting for the first processed frame (model loading, warm-up)"
        return (f"[demo] {elapsed:5.1f} s: {s.frames_processed} processed, {s.frames_dropped} dropped, "
                f"{s.frames_rejected} rejected | last frame {f.input_width}x{f.input_height} -> "
                f"{f.network_width}x{f.network_height} on {f.device} {f.precision}: inference "
                f"{f.inference_ms:.0f} ms, total {f.total_ms:.0f} ms | written: "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())))


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.output.mkdir(parents=True, exist_ok=True)
    tasks = ("depth", "segmentation") if args.tasks == "both" else (args.tasks,)
    variants = [args.variant if task == "depth" else args.segmentation_variant for task in tasks]

    if args.input_size is None:
        import torch

        on_cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
        args.input_size = cpu_network_size(variants, tasks) if on_cpu else 0
        if on_cpu:
            print(f"[demo] no GPU: running at network size {args.input_size} (--input-size 0 for the variant's "
                  "own size)")
    random_weights = args.weights == ""
    if random_weights:
        print("[demo] WARNING: --weights '': running the whole pipeline with RANDOM weights (depth and labels are "
              "meaningless)", flush=True)
    elif args.weights == "auto" and not official_weights_reachable(variants, tasks):
        random_weights = True
        print("[demo] WARNING: official weights are not available offline: running the whole pipeline with "
              "RANDOM weights (depth and labels are meaningless; put the checkpoints in the cache to fix)",
              flush=True)
    weights = "''" if random_weights else args.weights
    lib = Path(os.environ.get("COLCON_PREFIX_PATH", "install").split(os.pathsep)[0]) / "dpt_ros" / "lib" / "dpt_ros"
    logs = args.output / "logs"
    logs.mkdir(exist_ok=True)
    camera = subprocess.Popen(
        [str(lib / "demo_camera"), "--ros-args", "-r", f"__ns:={NAMESPACE}", "-p", f"rate_hz:={args.rate}",
         "-p", f"width:={args.width}", "-p", f"height:={args.height}"],
        stdout=open(logs / "demo_camera.log", "wb"), stderr=subprocess.STDOUT)
    node_args = ["-r", f"__ns:={NAMESPACE}", "-p", f"model.variant:={args.variant}",
                 "-p", f"model.weights:={weights}", "-p", f"model.segmentation_weights:={weights}",
                 "-p", f"model.segmentation_variant:={args.segmentation_variant}",
                 "-p", f"model.allow_random_weights:={'true' if random_weights else 'false'}",
                 "-p", f"model.tasks:={args.tasks}", "-p", f"device:={args.device}",
                 "-p", f"precision:={args.precision}", "-p", f"input_size:={args.input_size}"]
    node_args += ["-p", f"depth.scale:={args.depth_scale}", "-p", f"depth.shift:={args.depth_shift}"]
    if "depth" in tasks and not predicts_metric_depth(args.variant) and args.depth_scale <= 0.0:
        print("[demo] relative depth model: depth/image and points need --depth-scale (not set)")
    node_process = subprocess.Popen([str(lib / "dpt_node"), "--ros-args", *node_args],
                                    stdout=open(logs / "dpt_node.log", "wb"), stderr=subprocess.STDOUT)
    print(f"[demo] demo_camera {args.width}x{args.height} @ {args.rate} Hz -> dpt_node ({args.variant}, "
          f"{args.tasks}) -> {args.output}/ ; logs in {logs}/", flush=True)

    rclpy.init()
    node = rclpy.create_node("demo_recorder")
    recorder = Recorder(node, args.output)
    started = last_line = time.monotonic()
    first_frame_at = None
    status = 0
    try:
        while True:
            now = time.monotonic()
            if first_frame_at is None:
                if recorder.processed():
                    first_frame_at = now
                elif now - started > args.startup_timeout:
                    break
            elif args.duration > 0 and now - first_frame_at >= args.duration:
                break
            rclpy.spin_once(node, timeout_sec=0.1)
            if node_process.poll() is not None:
                print(f"[demo] dpt_node exited with {node_process.returncode}; see {logs}/dpt_node.log:")
                print((logs / "dpt_node.log").read_text()[-2000:])
                status = 1
                break
            if time.monotonic() - last_line >= 1.0:
                last_line = time.monotonic()
                print(recorder.summary(last_line - started), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        for process in (camera, node_process):
            stop_process(process)
        node.destroy_node()
        rclpy.try_shutdown()
    if status == 0 and not recorder.processed():
        print(f"[demo] no frame was processed within --startup-timeout {args.startup_timeout:g} s; see the logs",
              flush=True)
        status = 1
    print(f"[demo] done: outputs in {args.output}/ ({', '.join(sorted(p.name for p in args.output.iterdir()))})")
    return status


if __name__ == "__main__":
    sys.exit(main())
