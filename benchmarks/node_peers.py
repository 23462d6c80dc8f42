"""The processes around dpt_node in benchmarks/node.py and multi_camera.py, each its own OS
process and DDS participant.

    python benchmarks/node_peers.py publisher --ns /bench --sizes 640x480,1280x720 --frames 20 --out pub.json
    python benchmarks/node_peers.py subscriber --ns /bench --topics depth/image,points,... --out sub.json
    python benchmarks/node_peers.py cloud --iterations 200 --malloc node --out cloud.json
    python benchmarks/node_peers.py stream --ns /bench --cameras cam0,cam1 --seconds 20 --out stream.json

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
    ``InferenceStats`` fields; acknowledges complete frames on ``bench_frame_done`` (a Header with
    the frame's stamp and, as frame_id, its camera); writes the records when stopped with
    SIGINT/SIGTERM.  With ``--cameras a,b`` it does this for the outputs under each camera's
    namespace, with that camera's stats topic (``--stats-topic``, ``{camera}`` replaced).
stream
    A rig of several cameras (``--cameras``) publishing camera_info + rgb8 frames for
    ``--seconds``, all cameras at the same moment with the same stamp (a round), faster than the
    node(s) can process: rounds follow each other at ``--lead`` (1.5) times the rate at which the
    fastest camera's frames come back complete (acknowledged by the subscriber; ``--initial-rate-hz``
    until enough have), so between two forward passes at least one whole round arrives and a node
    always finds a frame of every camera it serves waiting.  The price: a third or more of the
    frames are replaced while waiting (a node keeps only the newest per camera).  A fixed rate high
    enough for a GPU would swamp a small CPU with frames; a closed loop (the next frame when one
    comes back) leaves a camera without a waiting frame whenever the round trip through the
    subscriber takes longer than a forward pass, and a batching node then runs the others without it.
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

# dpt_node's stats topic relative to its namespace (one camera, `cameras` unset).
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


def camera_messages(width: int, height: int, pixels: np.ndarray, frame_id: str):
    """An rgb8 Image of ``pixels`` and its CameraInfo, both without a stamp."""
    from sensor_msgs.msg import CameraInfo, Image

    fx, fy, cx, cy = intrinsics(width, height)
    image = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    image.header.frame_id = frame_id
    image.data = pixels.tobytes()
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.frame_id = frame_id
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    return image, info


def _spin_until(node, predicate, timeout: float) -> bool:
    import rclpy

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        rclpy.spin_once(node, timeout_sec=0.01)
    return predicate()


def _everyone_listening(node, publishers, waited_for: list[str]) -> bool:
    """dpt_node subscribed to our inputs, the subscriber up (its ack publisher) and subscribed to
    every output in ``waited_for`` (absolute topic names)."""
    return (all(pub.get_subscription_count() > 0 for pub in publishers)
            and node.count_publishers(f"{node.get_namespace().rstrip('/')}/{ACK_TOPIC}") > 0
            and all(node.count_subscribers(topic) > 0 for topic in waited_for))


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
        return _spin_until(node, predicate, timeout)

    result = {"sizes": {}, "lost": []}
    try:
        if not spin_until(lambda: _everyone_listening(node, (image_pub, info_pub), waited_for), args.startup_timeout):
            print("publisher: dpt_node or the subscriber never appeared", file=sys.stderr)
            return 2
        for size_text in args.sizes.split(","):
            width, height = parse_size(size_text)
            frames = [synthetic_frame(width, height, seed) for seed in range(4)]
            stamps = []
            for index in range(args.warmup + args.frames):
                # built before the clock starts
                image, info = camera_messages(width, height, frames[index % len(frames)], FRAME_ID)
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
    cameras = [c for c in args.cameras.split(",") if c] or [""]  # "": the node's own namespace
    # Outputs seen per (camera, stamp) (the stats message counts as one): complete frames are
    # acknowledged, which is what lets the publisher send the next frame.
    seen_outputs: dict[tuple[str, int], int] = {}
    ack_pub = node.create_publisher(Header, ACK_TOPIC, qos)

    def arrived(camera: str, stamp: int) -> None:
        key = (camera, stamp)
        seen_outputs[key] = seen_outputs.get(key, 0) + 1
        if seen_outputs[key] == len(frame_topics) + 1:
            ack_pub.publish(Header(stamp=_time_msg(stamp), frame_id=camera))

    subscribed = [(camera, topic) for camera in cameras for topic in frame_topics]
    subscribed += [(None, topic) for topic in args.extra_topics.split(",") if topic]
    for camera, topic in subscribed:
        name = f"{camera}/{topic}" if camera else topic
        seen = arrivals.setdefault(name, {})

        def on_raw(data, seen=seen, camera=camera):
            now = time.time_ns()
            stamp = _stamp_of_cdr(data)
            if camera is not None and stamp not in seen:
                arrived(camera, stamp)
            seen[stamp] = now

        node.create_subscription(types.get(topic, Image), name, on_raw, qos, raw=True)

    def on_stats(msg, camera: str):
        now = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        arrived(camera, stamp)
        stats.append(dict(camera=camera, batch_size=msg.batch_size,
                          stamp=stamp, received=now, width=msg.input_width, height=msg.input_height,
                          network_width=msg.network_width, network_height=msg.network_height,
                          decode_ms=msg.decode_ms, preprocess_ms=msg.preprocess_ms,
                          inference_ms=msg.inference_ms, postprocess_ms=msg.postprocess_ms,
                          publish_ms=msg.publish_ms, total_ms=msg.total_ms, device=msg.device,
                          precision=msg.precision, model_variant=msg.model_variant,
                          frames_dropped=msg.frames_dropped))

    for camera in cameras:
        node.create_subscription(InferenceStats, args.stats_topic.format(camera=camera),
                                 lambda msg, camera=camera: on_stats(msg, camera), qos)
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


# ------------------------------------------------------------------------------------------ stream
def run_stream(args) -> int:
    import collections

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    rclpy.init()
    node = rclpy.create_node("bench_stream", namespace=args.ns)
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    cameras = [c for c in args.cameras.split(",") if c]
    width, height = parse_size(args.size)
    publishers, messages = {}, {}
    for index, camera in enumerate(cameras):
        publishers[camera] = (node.create_publisher(Image, f"{camera}/image", qos),
                              node.create_publisher(CameraInfo, f"{camera}/camera_info", qos))
        # Each camera its own picture and optical frame; the messages are built once, only the
        # stamps change (publishing serializes them on the spot).
        messages[camera] = camera_messages(width, height, synthetic_frame(width, height, index),
                                           f"{camera.replace('/', '_')}_optical_frame")
    # When each camera's last few frames came back complete (monotonic seconds).
    acked = {camera: collections.deque(maxlen=10) for camera in cameras}

    def on_ack(msg) -> None:
        if msg.frame_id in acked:
            acked[msg.frame_id].append(time.monotonic())

    node.create_subscription(Header, ACK_TOPIC, on_ack, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    waited_for = [f"{args.ns}/{camera}/{topic}" for camera in cameras
                  for topic in args.wait_for_subscribers.split(",") if topic]
    all_publishers = [pub for pair in publishers.values() for pub in pair]

    def output_rate() -> float:
        """Frames per second coming back for the fastest camera (0 until one has 3 acks)."""
        rates = [(len(times) - 1) / (times[-1] - times[0]) for times in acked.values()
                 if len(times) >= 3 and times[-1] > times[0]]
        return max(rates, default=0.0)

    result = {"cameras": cameras, "rounds": 0, "round_rate_hz": []}
    try:
        if not _spin_until(node, lambda: _everyone_listening(node, all_publishers, waited_for), args.startup_timeout):
            print("stream: dpt_node(s) or the subscriber never appeared", file=sys.stderr)
            return 2
        result["start_ns"] = time.time_ns()
        end_ns = result["start_ns"] + int(args.seconds * 1e9)
        period = 1.0 / args.initial_rate_hz
        next_round = next_update = time.monotonic()
        while time.time_ns() < end_ns:
            now = time.monotonic()
            if now >= next_update:
                rate = output_rate()
                if rate > 0.0:
                    period = max(1e-3, 1.0 / (args.lead * rate))
                result["round_rate_hz"].append(round(1.0 / period, 2))
                next_update = now + 0.5
            if now >= next_round:
                stamp = _time_msg(time.time_ns())
                for camera in cameras:
                    image, info = messages[camera]
                    info.header.stamp = image.header.stamp = stamp
                    publishers[camera][1].publish(info)  # the camera_info first, with the image's stamp
                    publishers[camera][0].publish(image)
                result["rounds"] += 1
                next_round = now + period  # from now: a late round does not cause a burst of catch-up rounds
            rclpy.spin_once(node, timeout_sec=max(0.0, min(next_round, next_update) - time.monotonic()))
        result["end_ns"] = end_ns
    finally:
        with open(args.out, "w") as fh:
            json.dump(result, fh)
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
        from dpt_ros.processes import keep_large_buffers_mapped

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
    sub.add_argument("--cameras", default="",
                     help="comma-separated camera namespaces under --ns; --topics are then under each")
    sub.add_argument("--stats-topic", default=STATS_TOPIC,
                     help="InferenceStats topic relative to --ns; {camera} is replaced by each camera")
    sub.add_argument("--out", required=True)
    stream = roles.add_parser("stream")
    stream.add_argument("--ns", required=True)
    stream.add_argument("--cameras", required=True, help="comma-separated camera namespaces under --ns")
    stream.add_argument("--size", default="640x480")
    stream.add_argument("--seconds", type=float, required=True, help="how long to publish")
    stream.add_argument("--lead", type=float, default=1.5,
                        help="rounds per second as a multiple of the fastest camera's output rate")
    stream.add_argument("--initial-rate-hz", type=float, default=20.0,
                        help="rounds per second until outputs come back")
    stream.add_argument("--startup-timeout", type=float, default=300.0)
    stream.add_argument("--wait-for-subscribers", default="",
                        help="output topics (relative to each camera) that must have a subscriber")
    stream.add_argument("--out", required=True)
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
    return {"publisher": run_publisher, "subscriber": run_subscriber, "stream": run_stream,
            "cloud": run_cloud}[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
