"""rosbag2 recordings for the evaluator tests, written here with rosbags' writer (no ROS needed).

Scenes are tiny (64x48, a handful of frames) with known ground truth: two fronto-parallel planes
per frame at known distances, and two labelled regions.  ``SceneReadingEngine`` is an engine test
double that reads the scene's true depth back out of the image's red channel and applies a known
error, so the metrics a run reports can be checked against values computed by hand.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from dpt_ros.evaluation import bag_io
from dpt_ros.image_codec import array_to_image_fields
from dpt_ros.inference import InferenceResult

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
T = TYPESTORE.types
HEIGHT, WIDTH = 48, 64
T0 = 1_700_000_000_000_000_000  # header stamp of frame 0 (ns)
PERIOD = 100_000_000  # 10 Hz
RECEIVE_DELAY = 3_000_000  # bag time = header stamp + 3 ms: matching must use header stamps
FX = FY = 50.0
CX, CY = 31.5, 23.5
# The image's red channel holds depth in units of 5 cm, which SceneReadingEngine reads back.
RED_PER_METRE = 20
# Labels: left half "wall" (0), right half "floor" (3), top row unlabeled.
LEFT_CLASS, RIGHT_CLASS = 0, 3
STORAGES = ("sqlite3", "mcap")
IMAGE_TOPIC = "/camera/image_raw"
FRAME_ID = "camera_optical_frame"


def plane_depths(k: int) -> tuple[float, float]:
    """Distances (m) of the top and bottom plane in frame k (multiples of 5 cm)."""
    return 2.0 + 0.5 * k, 4.0 + 0.25 * k


def scene(k: int):
    top, bottom = plane_depths(k)
    depth = np.empty((HEIGHT, WIDTH), np.float32)
    depth[: HEIGHT // 2] = top
    depth[HEIGHT // 2:] = bottom
    labels = np.full((HEIGHT, WIDTH), LEFT_CLASS, np.uint8)
    labels[:, WIDTH // 2:] = RIGHT_CLASS
    labels[0] = 255
    rgb = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    rgb[..., 0] = np.round(depth * RED_PER_METRE).astype(np.uint8)
    rgb[..., 1] = np.where(labels == RIGHT_CLASS, 200, 40)
    rgb[..., 2] = np.arange(WIDTH, dtype=np.uint8)[None, :] * 3
    return rgb, depth, labels


def header(stamp_ns: int):
    return bag_io.make_header(TYPESTORE, stamp_ns, FRAME_ID)


def image_msg(array, encoding):
    return T["sensor_msgs/msg/Image"], array_to_image_fields(array, encoding, as_numpy=True)


def camera_info_msg(stamp_ns: int, width: int = WIDTH, height: int = HEIGHT, fx: float = FX, fy: float = FY,
                    cx: float = CX, cy: float = CY, binning: int = 0, roi=(0, 0, 0, 0)):
    """CameraInfo with the calibration P = K; ``roi`` is (x_offset, y_offset, width, height)."""
    x_offset, y_offset, roi_width, roi_height = roi
    return T["sensor_msgs/msg/CameraInfo"](
        header=header(stamp_ns), height=height, width=width, distortion_model="plumb_bob",
        d=np.zeros(5), k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1.0]), r=np.eye(3).ravel(),
        p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1.0, 0]), binning_x=binning, binning_y=binning,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=x_offset, y_offset=y_offset, height=roi_height,
                                                 width=roi_width, do_rectify=False))


def write_bag(path, storage="sqlite3", frames=4, *, compressed=False, corrupt=(), bad_step=(),
              depth_encoding="32FC1", raw_ade_labels=False, gt_offset_ns=0, extra_topics=False,
              zero_stamps=False, encoding="rgb8", camera_info=camera_info_msg, extra_messages=None):
    """A bag with /camera/image_raw (or .../compressed), camera_info, gt depth and gt labels.

    ``corrupt``: frames whose pixel data is truncated (compressed: not an image); ``bad_step``:
    frames whose row step is too small; ``zero_stamps``: a camera that leaves header stamps at 0
    (bag times stay real); ``encoding``: of the raw images (the pixels are rgb8 bytes whatever
    it says); ``camera_info(stamp_ns)`` builds each frame's CameraInfo; ``extra_messages(k,
    stamp_ns)`` gives more (topic, message) pairs of frame k (a sparse depth sensor), each
    recorded RECEIVE_DELAY after its own header stamp."""
    writer = Writer(path, version=9, storage_plugin=StoragePlugin[storage.upper()])
    writer.open()
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    image_topic = IMAGE_TOPIC + "/compressed" if compressed else IMAGE_TOPIC
    conns = {
        "image": writer.add_connection(image_topic, image_type, typestore=TYPESTORE),
        "info": writer.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo",
                                      typestore=TYPESTORE),
        "depth": writer.add_connection("/gt/depth", "sensor_msgs/msg/Image", typestore=TYPESTORE),
        "labels": writer.add_connection("/gt/labels", "sensor_msgs/msg/Image", typestore=TYPESTORE),
    }
    if extra_topics:
        conns["tf"] = writer.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=TYPESTORE)

    def put(name, msg, bag_time):
        if name not in conns:
            conns[name] = writer.add_connection(name, msg.__msgtype__, typestore=TYPESTORE)
        writer.write(conns[name], bag_time, TYPESTORE.serialize_cdr(msg, msg.__msgtype__))

    for k in range(frames):
        bag_time = T0 + k * PERIOD
        stamp = 0 if zero_stamps else bag_time
        rgb, depth, labels = scene(k)
        if compressed:
            ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            data = np.frombuffer(b"not an image" if k in corrupt else png.tobytes(), np.uint8)
            msg = T[image_type](header=header(stamp), format="png", data=data)
        else:
            cls, fields = image_msg(rgb, "rgb8")
            fields["encoding"] = encoding
            if k in corrupt:  # truncated pixel data: deserializes, cannot be decoded
                fields["data"] = fields["data"][: fields["step"] * 3]
            if k in bad_step:
                fields["step"] = WIDTH
            msg = cls(header=header(stamp), **fields)
        put("image", msg, bag_time + RECEIVE_DELAY)
        put("info", camera_info(stamp), bag_time + RECEIVE_DELAY)
        if depth_encoding == "16UC1":
            cls, fields = image_msg(np.round(depth * 1000).astype(np.uint16), "16UC1")
        else:
            cls, fields = image_msg(depth, "32FC1")
        gt_stamp = stamp + gt_offset_ns
        put("depth", cls(header=header(gt_stamp), **fields), bag_time + gt_offset_ns + 2 * RECEIVE_DELAY)
        if raw_ade_labels:  # raw ADE20K: 0 = unlabeled, k = class k-1
            cls, fields = image_msg(np.where(labels == 255, 0, labels + 1).astype(np.uint16), "16UC1")
        else:
            cls, fields = image_msg(labels, "mono8")
        put("labels", cls(header=header(gt_stamp), **fields), bag_time + gt_offset_ns + 2 * RECEIVE_DELAY)
        if extra_topics:
            put("tf", T["tf2_msgs/msg/TFMessage"](transforms=[]), bag_time + 1)
        for topic, msg in (extra_messages(k, stamp) if extra_messages else ()):
            put(topic, msg, bag_io.stamp_to_ns(msg.header.stamp) + RECEIVE_DELAY)
    writer.close()
    return Path(path)


def depth_image_msg(depth_m, stamp_ns: int, encoding: str = "16UC1", frame_id: str = FRAME_ID):
    """A depth image (16UC1 millimetres or 32FC1 metres, REP 118: NaN or 0 = no return)."""
    depth_m = np.asarray(depth_m, np.float64)
    if encoding == "16UC1":
        pixels = np.where(np.isfinite(depth_m), np.round(depth_m * 1000.0), 0).astype(np.uint16)
    else:
        pixels = depth_m.astype(np.float32)
    cls, fields = image_msg(pixels, encoding)
    return cls(header=bag_io.make_header(TYPESTORE, stamp_ns, frame_id), **fields)


def cloud_msg(points, stamp_ns: int, frame_id: str = "lidar"):
    """A PointCloud2 of (N, 3) points, x y z float32, in the sensor frame ``frame_id``."""
    points = np.ascontiguousarray(points, dtype="<f4")
    fields = [T["sensor_msgs/msg/PointField"](name=name, offset=4 * i, datatype=7, count=1)  # 7 = FLOAT32
              for i, name in enumerate("xyz")]
    return T["sensor_msgs/msg/PointCloud2"](
        header=bag_io.make_header(TYPESTORE, stamp_ns, frame_id), height=1, width=len(points), fields=fields,
        is_bigendian=False, point_step=12, row_step=12 * len(points),
        data=np.frombuffer(points.tobytes(), np.uint8), is_dense=True)


OUT_TYPESTORE, HAS_OUR_TYPES = bag_io.make_typestore()


def read_bag(path):
    """{topic: [(bag_time, message), ...]} and {topic: type} of a bag."""
    messages = {}
    with Reader(path) as reader:
        for connection, bag_time, raw in reader.messages():
            messages.setdefault(connection.topic, []).append(
                (bag_time, OUT_TYPESTORE.deserialize_cdr(raw, connection.msgtype)))
        topics = {topic: info.msgtype for topic, info in reader.topics.items()}
    return messages, topics


class SceneReadingEngine:
    """Engine test double: depth from the scene encoded in the red channel, with a known error.

    ``kind="metric_depth"`` returns ``factor * depth`` (metres); ``"relative_inverse_depth"``
    returns an affine map of the true inverse depth, which alignment must undo exactly; ``noise``
    adds a known relative error per pixel.  It has the interface dpt_ros.pipeline.process_frames
    uses.
    """

    def __init__(self, kind="metric_depth", factor=1.0, labels=False, noise=0.0):
        self.depth_output_kind = kind
        self.factor = factor
        self.noise = noise  # relative error per pixel: output * (1 + noise * n), n ~ N(0, 1) seeded by the image
        self.tasks = ("depth", "segmentation") if labels else ("depth",)
        self.device = torch.device("cpu")
        self.precision = "fp32"
        self.compile_status = {task: "eager" for task in self.tasks}
        self.calls = []

    def network_size(self, height, width, task):
        return 32 * round(height / 32), 32 * round(width / 32)

    def infer(self, images, bgr=False, tasks=None, keep_on_device=False):
        self.calls.append(len(images))
        tasks = self.tasks if tasks is None else tasks
        results = []
        for image in images:
            depth = image[..., 0].astype(np.float32) / RED_PER_METRE
            if self.depth_output_kind == "metric_depth":
                out = self.factor * depth
            else:
                out = (1.0 / depth - 0.05) / 0.01  # s = 0.01, t = 0.05 recovers 1/depth
            if self.noise:
                rng = np.random.default_rng(int(image[..., 0].sum()))
                out = out * (1.0 + self.noise * rng.standard_normal(out.shape))
            labels = None
            if "segmentation" in tasks:  # the right half predicted correctly, the left half as class 1
                labels = np.where(image[..., 1] == 200, RIGHT_CLASS, 1).astype(np.uint8)
            results.append(InferenceResult(depth=out.astype(np.float32) if "depth" in tasks else None,
                                           labels=labels,
                                           timings_ms={"preprocess": 1.0, "inference": 2.0,
                                                       "postprocess": 0.5}))
        return results


def write_tiny_checkpoints(directory, seed: int = 3) -> tuple[Path, Path]:
    """dpt_tiny depth and segmentation weights as release-layout .pt files (what --weights and
    model.weights take), seeded so that every process loading them runs the same network."""
    from dpt_ros.model import build_model, to_original_state_dict

    paths = []
    for offset, task in enumerate(("depth", "segmentation")):
        path = Path(directory) / f"dpt_tiny_{task}.pt"
        torch.save(to_original_state_dict(build_model("dpt_tiny", task, seed=seed + offset)), path)
        paths.append(path)
    return paths[0], paths[1]
