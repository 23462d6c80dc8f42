"""Test frames for the node tests: a synthetic scene, its Image and CameraInfo messages."""
from __future__ import annotations

import numpy as np

WIDTH, HEIGHT = 80, 60
FX, FY, CX, CY = 50.0, 52.0, 39.5, 29.5


def scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[: HEIGHT // 2] = (90, 140, 220)
    image[HEIGHT // 2:] = (80, 120, 60)
    image += rng.integers(0, 30, image.shape, dtype=np.uint8)
    return image


def make_image(seq: int, pixels: np.ndarray | None = None, encoding: str = "rgb8", step: int | None = None,
               data: bytes | None = None, width: int = WIDTH, height: int = HEIGHT):
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image

    pixels = scene(seq) if pixels is None else pixels
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0,
                step=width * 3 if step is None else step)
    msg.data = pixels.tobytes() if data is None else data
    msg.header.stamp = Time(sec=1000 + seq, nanosec=0)
    msg.header.frame_id = "test_optical_frame"
    return msg


def make_camera_info(seq: int, width: int = WIDTH, height: int = HEIGHT, fx: float = FX):
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.k = [fx, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    info.header.stamp = Time(sec=1000 + seq, nanosec=0)
    info.header.frame_id = "test_optical_frame"
    return info


def decode_float_image(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), dtype="<f4").reshape(msg.height, msg.width)
