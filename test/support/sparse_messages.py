"""Sparse metric depth messages for the alignment tests: a registered RGB-D depth image and a lidar
cloud made from a known depth map of the test camera (support.frames), so the scale and shift an
aligner must find are known."""
from __future__ import annotations

import numpy as np

from support.frames import CX, CY, FX, FY, HEIGHT, WIDTH

SCALE, SHIFT = 0.4, 0.1  # the true map from a relative output to inverse metres
# Pose of the lidar (x forward, y left, z up) in the camera's optical frame (x right, y down, z
# forward): lidar x -> camera z, y -> -x, z -> -y, i.e. camera = LIDAR_AXES @ lidar + LIDAR_ORIGIN.
LIDAR_IN_CAMERA = (0.05, -0.10, -0.20, 0.5, -0.5, 0.5, 0.5)
LIDAR_AXES = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
LIDAR_ORIGIN = np.array(LIDAR_IN_CAMERA[:3])


def stamped(msg, sec: int, nanosec: int = 0):
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    return msg


def true_depth(relative: np.ndarray, scale: float = SCALE, shift: float = SHIFT) -> np.ndarray:
    return 1.0 / (scale * relative.astype(np.float64) + shift)


def depth_image_16uc1(depth_m: np.ndarray, sec: int, nanosec: int = 0):
    """A registered RGB-D depth image in millimetres, every fourth pixel a hole (0, REP 118)."""
    from sensor_msgs.msg import Image

    millimetres = np.round(depth_m * 1000.0).astype("<u2")
    millimetres.reshape(-1)[::4] = 0
    msg = Image(height=HEIGHT, width=WIDTH, encoding="16UC1", is_bigendian=0, step=WIDTH * 2,
                data=millimetres.tobytes())
    msg.header.frame_id = "test_optical_frame"
    return stamped(msg, sec, nanosec)


def lidar_cloud(depth_m: np.ndarray, sec: int):
    """The pixels' points at ``depth_m`` (in the camera's optical frame) as a lidar in its own frame
    sees them, plus returns behind the camera that must not take part; x, y, z float32."""
    from sensor_msgs.msg import PointCloud2, PointField

    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
    camera = np.stack([(u - CX) * depth_m / FX, (v - CY) * depth_m / FY, depth_m], axis=-1).reshape(-1, 3)
    behind = np.array([[0.0, 0.0, -2.0], [1.0, 0.5, -5.0]]).repeat(50, axis=0)  # camera frame, z < 0
    lidar = (np.concatenate([camera, behind]) - LIDAR_ORIGIN) @ LIDAR_AXES  # = LIDAR_AXES.T @ (p - origin)
    points = lidar.astype("<f4")
    fields = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, name in enumerate("xyz")]
    msg = PointCloud2(height=1, width=len(points), fields=fields, is_bigendian=False, point_step=12,
                      row_step=12 * len(points), data=points.tobytes(), is_dense=True)
    msg.header.frame_id = "lidar"
    return stamped(msg, sec)
