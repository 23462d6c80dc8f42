"""The processes around dpt_node in benchmarks/node.py, each its own OS process and DDS participant.

    python benchmarks/node_peers.py publisher --ns /bench --sizes 640x480,1280x720 --frames 20 --out pub.json
    python benchmarks/node_peers.py subscriber --ns /bench --topics depth/image,points,... --out sub.json
    python benchmarks/node_peers.py cloud --iterations 200 --malloc node --out cloud.json

publisher
    Sends camera_info + rgb8 Image frames, one at a time: the next frame goes out only after the
    subscriber acknowledged that every output of the previous one (and its ``~/stats``) arrived,
    so every frame measures the latency of an idle pipeline, never queueing.  The image stamp is the wall time at its publish
    call; its camera_info goes out ``--gap-ms`` earlier with the same stamp (so the node's exact
    stamp match picks it, and depth/camera_info carries the frame's stamp too).
subscriber
    Subscribes to every output (raw CDR for the images and the cloud: only the stamp is read, at
    bytes 4..12 after the CDR encapsulation header, so Python deserialization of megabytes does not
    count as latency) and records the wall time each message with a given stamp arrived, plus the
    ``InferenceStats`` fields; acknowledges complete frames on ``bench_frame_done``; writes the
    records when stopped with SIGINT/SIGTERM.
cloud
    The cost of a 640x480 xyzrgb(+label) PointCloud2 alone, in one process: depth_to_xyz ->
    pack_cloud -> to_pointcloud2 -> publish, with a subscriber in another process (the subscriber
    role, listening to ``cloud_only``).  ``--malloc node`` applies dpt_node's glibc tuning
    (``keep_large_buffers_mapped``) first, ``--malloc default`` leaves glibc's defaults.
"""
from __future__ import annotations

import argparse
import json
import signal
import struct
import sys
import time

import numpy as np

from bench_util import use_checkout

use_checkout()

# Output topics of dpt_node relative to its namespace, and the stats topic.
STATS_TOPIC = "dpt_node/stats"
CLOUD_ONLY_TOPIC = "cloud_only"
# The subscriber acknowledges each frame whose outputs all arrived (a Header with its stamp).
ACK_TOPIC = "bench_frame_done"
FRAME_ID = "bench_camera_optical_frame"


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' -> (width, height)."""
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def intrinsics(width: int, height: int) -> tuple[float, float, float, float]:
    """A plausible pinhole camera (about 60 degrees horizontal field of view)."""
    focal = 0.866 * width
    return focal, focal, (width - 1) / 2.0, (height - 1) / 2.0


def synthetic_frame(width: int, height: int, seed: int) -> np.ndarray:
    """An RGB image with large-scale structure (gradients, a horizon) and noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    cols = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    image = np.empty((height, width, 3), np.float32)
    image[..., 0] = 200 * rows + 40 * cols
    image[..., 1] = 120 + 80 * np.sin(6.0 * cols + 3.0 * rows + seed)
    image[..., 2] = np.where(rows < 0.45, 220.0, 70.0) + 0 * cols
    image += rng.normal(0.0, 12.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _stamp_of_cdr(data: bytes) -> int:
    """Header stamp (ns) of a serialized message whose first field is a std_msgs/Header."""
    sec, nanosec = struct.unpack_from("<iI" if data[1] == 1 else ">iI", data, 4)
    return sec * 1_000_000_000 + nanosec


def _time_msg(ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class _Stopper:
    """Turns SIGINT/SIGTERM into a flag the spin loop checks."""

    def __init__(self):
        self.stop = False
        signal.signal(signal.SIGINT, self._set)
        signal.signal(signal.SIGTERM, self._set)

    def _set(self, *_):
        self.stop = True


# ------------------------------------------------------------------------------------------ publisher
def run_publisher(args) -> int:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    rclpy.init()
    node = rclpy.create_node("bench_publisher", namespace=args.ns)
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = node.create_publisher(Image, "image", qos)
    info_pub = node.create_publisher(CameraInfo, "camera_info", qos)
    done_stamps: set[int] = set()
    node.create_subscription(Header, ACK_TOPIC, lambda m: done_stamps.add(
        m.stamp.sec * 1_000_000_000 + m.stamp.nanosec), QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    waited_for = [f"{args.ns}/{name}" for name in args.wait_for_subscribers.split(",") if name]

    def spin_until(predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            rclpy.spin_once(node, timeout_sec=0.01)
        return predicate()

    def everyone_listening() -> bool:
        return (image_pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0
                and node.count_publishers(f"{args.ns}/{ACK_TOPIC}") > 0
                and all(node.count_subscribers(topic) > 0 for topic in waited_for))

    result = {"sizes": {}, "lost": []}
    try:
        if not spin_until(everyone_listening, args.startup_timeout):
            print("publisher: dpt_node or the subscriber never appeared", file=sys.stderr)
            return 2
        for size_text in args.sizes.split(","):
            width, height = parse_size(size_text)
            fx, fy, cx, cy = intrinsics(width, height)
            frames = [synthetic_frame(width, height, seed) for seed in range(4)]
            stamps = []
            for index in range(args.warmup + args.frames):
                image = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
                image.header.frame_id = FRAME_ID
                image.data = frames[index % len(frames)].tobytes()  # built before the clock starts
                info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
                info.header.frame_id = FRAME_ID
                info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
                info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
                info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
                info.d = [0.0] * 5
                # The image goes out at `stamp`; its camera_info, stamped alike, gap_ms earlier.
                stamp = time.time_ns() + int(args.gap_ms * 1e6)
                info.header.stamp = image.header.stamp = _time_msg(stamp)
                info_pub.publish(info)
                while time.time_ns() < stamp:
                    time.sleep(max(0.0, (stamp - time.time_ns()) / 1e9 - 0.0005))
                image_pub.publish(image)
                if spin_until(lambda: stamp in done_stamps, args.frame_timeout):
                    if index >= args.warmup:
                        stamps.append(stamp)
                else:
                    result["lost"].append(stamp)
                    print(f"publisher: frame {index} at {size_text} not complete at the subscriber after "
                          f"{args.frame_timeout} s", file=sys.stderr)
            result["sizes"][size_text] = stamps
    finally:
        with open(args.out, "w") as fh:
            json.dump(result, fh)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0  # lost frames are in the result; the caller reports them


# ------------------------------------------------------------------------------------------ subscriber
def run_subscriber(args) -> int:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header

    from dpt_ros.msg import InferenceStats

    stopper = _Stopper()
    rclpy.init(signal_handler_options=rclpy.SignalHandlerOptions.NO)
    node = rclpy.create_node("bench_subscriber", namespace=args.ns)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # dpt_node's output QoS
    arrivals: dict[str, dict[int, int]] = {}
    stats: list[dict] = []
    types = {"points": PointCloud2, CLOUD_ONLY_TOPIC: PointCloud2, "depth/camera_info": CameraInfo}
    frame_topics = [t for t in args.topics.split(",") if t]
    # Outputs seen per stamp (the stats message counts as one): complete frames are acknowledged,
    # which is what lets the publisher send the next frame.
    seen_outputs: dict[int, int] = {}
    ack_pub = node.create_publisher(Header, ACK_TOPIC, qos)

    def arrived(stamp: int) -> None:
        seen_outputs[stamp] = seen_outputs.get(stamp, 0) + 1
        if seen_outputs[stamp] == len(frame_topics) + 1:
            ack_pub.publish(Header(stamp=_time_msg(stamp)))

    for topic in frame_topics + [t for t in args.extra_topics.split(",") if t]:
        seen = arrivals.setdefault(topic, {})
        counts = topic in frame_topics

        def on_raw(data, seen=seen, counts=counts):
            now = time.time_ns()
            stamp = _stamp_of_cdr(data)
            if counts and stamp not in seen:
                arrived(stamp)
            seen[stamp] = now

        node.create_subscription(types.get(topic, Image), topic, on_raw, qos, raw=True)

    def on_stats(msg):
        now = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        arrived(stamp)
        stats.append(dict(stamp=stamp, received=now, width=msg.input_width, height=msg.input_height,
                          network_width=msg.network_width, network_height=msg.network_height,
                          decode_ms=msg.decode_ms, preprocess_ms=msg.preprocess_ms,
                          inference_ms=msg.inference_ms, postprocess_ms=msg.postprocess_ms,
                          publish_ms=msg.publish_ms, total_ms=msg.total_ms, device=msg.device,
                          precision=msg.precision, model_variant=msg.model_variant,
                          frames_dropped=msg.frames_dropped))

    node.create_subscription(InferenceStats, STATS_TOPIC, on_stats, qos)
    print("subscriber: ready", flush=True)
    try:
        while not stopper.stop:
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        with open(args.out, "w") as fh:
            json.dump({"arrivals": {t: {str(k): v for k, v in seen.items()} for t, seen in arrivals.items()},
                       "stats": stats}, fh)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


# ------------------------------------------------------------------------------------------ cloud
def run_cloud(args) -> int:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    from dpt_ros.cloud import pack_cloud, to_pointcloud2
    from dpt_ros.geometry import depth_to_xyz

    if args.malloc == "node":
        from dpt_ros.node import keep_large_buffers_mapped

        keep_large_buffers_mapped()

    width, height = parse_size(args.size)
    fx, fy, cx, cy = intrinsics(width, height)
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 10.0, (height, width)).astype(np.float32)
    depth[rng.random((height, width)) < 0.02] = np.nan  # a few invalid pixels, as in real output
    rgb = synthetic_frame(width, height, 0)
    labels = rng.integers(0, 150, (height, width), dtype=np.uint8)

    rclpy.init()
    node = rclpy.create_node("bench_cloud", namespace=args.ns)
    publisher = node.create_publisher(PointCloud2, CLOUD_ONLY_TOPIC,
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    deadline = time.monotonic() + args.startup_timeout
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    subscribed = publisher.get_subscription_count() > 0
    stages = {"xyz": [], "pack": [], "message": [], "publish": [], "total": []}
    point_step = 0
    try:
        for index in range(args.warmup + args.iterations):
            header = Header(frame_id=FRAME_ID, stamp=_time_msg(time.time_ns()))
            t0 = time.perf_counter()
            xyz = depth_to_xyz(depth, fx, fy, cx, cy)
            t1 = time.perf_counter()
            packed = pack_cloud(xyz, rgb=rgb, labels=labels)
            t2 = time.perf_counter()
            msg = to_pointcloud2(packed, header, PointCloud2, PointField)
            t3 = time.perf_counter()
            publisher.publish(msg)
            t4 = time.perf_counter()
            point_step = msg.point_step
            del xyz, packed, msg  # freed every frame, as in the node
            if index >= args.warmup:
                for name, (a, b) in dict(xyz=(t0, t1), pack=(t1, t2), message=(t2, t3), publish=(t3, t4),
                                         total=(t0, t4)).items():
                    stages[name].append((b - a) * 1e3)
            if args.period_ms > 0:
                time.sleep(args.period_ms / 1e3)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    with open(args.out, "w") as fh:
        json.dump(dict(size=args.size, malloc=args.malloc, subscribed=subscribed,
                       point_step=point_step, stages_ms=stages), fh)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    roles = parser.add_subparsers(dest="role", required=True)
    pub = roles.add_parser("publisher")
    pub.add_argument("--ns", required=True)
    pub.add_argument("--sizes", default="640x480,1280x720")
    pub.add_argument("--frames", type=int, default=20)
    pub.add_argument("--warmup", type=int, default=2)
    pub.add_argument("--gap-ms", type=float, default=20.0)
    pub.add_argument("--frame-timeout", type=float, default=120.0,
                     help="seconds to wait for a frame's outputs before giving up on it")
    pub.add_argument("--startup-timeout", type=float, default=120.0)
    pub.add_argument("--wait-for-subscribers", default="", help="output topics that must have a subscriber")
    pub.add_argument("--out", required=True)
    sub = roles.add_parser("subscriber")
    sub.add_argument("--ns", required=True)
    sub.add_argument("--topics", required=True,
                     help="the node's outputs, comma-separated, relative to --ns (the stats topic is implied)")
    sub.add_argument("--extra-topics", default=CLOUD_ONLY_TOPIC, help="recorded, not part of a frame")
    sub.add_argument("--out", required=True)
    cloud = roles.add_parser("cloud")
    cloud.add_argument("--ns", required=True)
    cloud.add_argument("--size", default="640x480")
    cloud.add_argument("--iterations", type=int, default=200)
    cloud.add_argument("--warmup", type=int, default=5)
    cloud.add_argument("--malloc", choices=("node", "default"), default="node")
    cloud.add_argument("--period-ms", type=float, default=0.0, help="sleep between clouds")
    cloud.add_argument("--startup-timeout", type=float, default=30.0)
    cloud.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    return {"publisher": run_publisher, "subscriber": run_subscriber, "cloud": run_cloud}[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
