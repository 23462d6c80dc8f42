"""Deterministic messages that one process publishes and another checks field by field."""
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from dpt_ros.msg import InferenceStats, LabelInfo

STAMP = Time(sec=1_700_000_123, nanosec=456_789_000)
FRAME_ID = "camera_color_optical_frame"
IMAGE_HEIGHT, IMAGE_WIDTH = 48, 64


def header() -> Header:
    return Header(stamp=STAMP, frame_id=FRAME_ID)


def image_pixels() -> np.ndarray:
    """A 48x64 rgb8 gradient whose every byte depends on its position (catches reordering)."""
    rows = np.arange(IMAGE_HEIGHT, dtype=np.uint16)[:, None, None]
    cols = np.arange(IMAGE_WIDTH, dtype=np.uint16)[None, :, None]
    channels = np.arange(3, dtype=np.uint16)[None, None, :]
    return ((rows * 7 + cols * 3 + channels * 101) % 256).astype(np.uint8)


def image() -> Image:
    pixels = image_pixels()
    return Image(header=header(), height=IMAGE_HEIGHT, width=IMAGE_WIDTH, encoding="rgb8",
                 is_bigendian=0, step=IMAGE_WIDTH * 3, data=pixels.tobytes())


def label_info() -> LabelInfo:
    return LabelInfo(header=header(), model_variant="dpt_large",
                     class_names=["wall", "building", "sky"],
                     colors=[0x787878, 0xB47878, 0x06E6E6], ignore_id=255)


def inference_stats() -> InferenceStats:
    return InferenceStats(
        header=header(), model_variant="dpt_hybrid_kitti", device="cuda:0", precision="bf16",
        input_width=640, input_height=480, network_width=512, network_height=384, batch_size=3,
        decode_ms=0.25, preprocess_ms=0.5, inference_ms=2.75, postprocess_ms=0.125,
        publish_ms=0.375, total_ms=4.0,
        frames_received=2**40 + 4, frames_processed=2**40, frames_dropped=2, frames_rejected=1,
        frames_failed=1)
