"""dpt_node's per-camera alignment (dpt_ros.ros.camera_alignment) without a running node: which
buffered message a frame uses, the sensor pose from TF, and what a frame without usable samples
reports.  TF itself (tf2_ros) is not installable here: a stand-in with TfExtrinsics' one method
gives the pose, as tf2 would for a lookup from the sensor frame to the camera frame."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dpt_ros.alignment import AlignerSettings, AlignmentState
from dpt_ros.sparse_depth import SampleSettings
from support.frames import CX, CY, FX, FY, HEIGHT, WIDTH
from support.sparse_messages import (
    LIDAR_IN_CAMERA, SCALE, SHIFT, depth_image_16uc1, lidar_cloud, stamped, true_depth)

pytestmark = pytest.mark.ros  # sensor_msgs and the ROS adapter's modules

INTRINSICS = (FX, FY, CX, CY)
# A smooth relative prediction of the test camera's size (inverse depth, larger = nearer).
PREDICTION = np.linspace(0.5, 2.5, HEIGHT * WIDTH, dtype=np.float32).reshape(HEIGHT, WIDTH)


class Logger:
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(("info", message))

    def warning(self, message):
        self.lines.append(("warning", message))


class RecordingTf:
    """TfExtrinsics' interface: the pose it is given, or LookupError; records each lookup."""

    def __init__(self, pose=None):
        self.pose, self.lookups = pose, []

    def extrinsic(self, camera_frame, sensor_frame, stamp):
        self.lookups.append((camera_frame, sensor_frame, (stamp.sec, stamp.nanosec)))
        if self.pose is None:
            raise LookupError(f"no transform from {sensor_frame!r} to {camera_frame!r} at the image stamp")
        return self.pose


def camera_alignment(source, tf=None, **sample_changes):
    from dpt_ros.ros.camera_alignment import CameraAlignment

    node = SimpleNamespace(resolve_topic_name=lambda name: f"/cam/{name}")
    settings = (AlignerSettings(), SampleSettings(**{"min_depth": 0.1, **sample_changes}))
    return CameraAlignment(node, "", source, lambda: settings, Logger(), tf)


def header(sec, nanosec=0):
    """An image header (std_msgs/Header's fields)."""
    return SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec), frame_id="test_optical_frame")


def test_extrinsic_of_a_transform_is_the_child_frames_pose_in_the_parent():
    from geometry_msgs.msg import Quaternion, Transform, TransformStamped, Vector3

    from dpt_ros.ros.camera_alignment import extrinsic_of

    transform = TransformStamped(transform=Transform(translation=Vector3(x=0.05, y=-0.1, z=-0.2),
                                                     rotation=Quaternion(x=0.5, y=-0.5, z=0.5, w=0.5)))
    assert extrinsic_of(transform) == LIDAR_IN_CAMERA
    assert extrinsic_of(transform.transform) == LIDAR_IN_CAMERA


def test_nearest_in_stamp_within_the_tolerance():
    from dpt_ros.ros.camera import nearest_in_stamp

    messages = [SimpleNamespace(header=header(10, ns)) for ns in (0, 40_000_000, 90_000_000)]
    stamp = header(10, 60_000_000).stamp
    assert nearest_in_stamp(messages, stamp, 0.05) is messages[1]       # 20 ms, not 30 ms
    assert nearest_in_stamp(messages, header(11).stamp, 0.05) is None   # 910 ms from the nearest
    assert nearest_in_stamp([], stamp, 1.0) is None


def test_points_are_moved_by_the_pose_tf_gives_at_the_image_stamp_not_the_parameter():
    tf = RecordingTf(LIDAR_IN_CAMERA)
    alignment = camera_alignment("points", tf=tf)  # alignment.extrinsic left at identity
    alignment._on_message(lidar_cloud(true_depth(PREDICTION), 7))
    estimate = alignment.align(PREDICTION, header(7, 10_000_000), INTRINSICS)
    assert tf.lookups == [("test_optical_frame", "lidar", (7, 10_000_000))]
    assert estimate.state == AlignmentState.CONVERGING, estimate.message
    assert estimate.scale == pytest.approx(SCALE, rel=1e-3) and estimate.shift == pytest.approx(SHIFT, rel=1e-3)
    level, line = alignment._logger.lines[-1]
    assert level == "info" and line.startswith("alignment to /cam/alignment/points usable: scale 0.4")


def test_a_frame_without_the_transform_keeps_the_estimate_and_says_why():
    alignment = camera_alignment("points", tf=RecordingTf(None))
    alignment._on_message(lidar_cloud(true_depth(PREDICTION), 7))
    estimate = alignment.align(PREDICTION, header(7), INTRINSICS)
    assert estimate.state == AlignmentState.NONE and estimate.scale == 0.0
    assert estimate.message == "samples unusable: no transform from 'lidar' to 'test_optical_frame' at the image stamp"
    assert alignment.estimate is estimate  # what /diagnostics reports


def test_a_registered_depth_image_needs_neither_tf_nor_intrinsics():
    tf = RecordingTf(None)
    alignment = camera_alignment("depth_image", tf=tf)
    alignment._on_message(depth_image_16uc1(true_depth(PREDICTION), 7))
    estimate = alignment.align(PREDICTION, header(7), None)
    assert tf.lookups == [] and estimate.state == AlignmentState.CONVERGING, estimate.message
    assert estimate.samples == WIDTH * HEIGHT * 3 // 4


def test_points_without_the_images_camera_info_give_no_samples_and_the_reason():
    alignment = camera_alignment("points", extrinsic=LIDAR_IN_CAMERA)
    alignment._on_message(lidar_cloud(true_depth(PREDICTION), 7))
    estimate = alignment.align(PREDICTION, header(7), None)
    assert estimate.state == AlignmentState.NONE
    assert "the image has no usable camera_info" in estimate.message


def test_an_unregistered_depth_image_waits_for_its_camera_info():
    alignment = camera_alignment("depth_image", registered=False)
    alignment._on_message(depth_image_16uc1(true_depth(PREDICTION), 7))
    estimate = alignment.align(PREDICTION, header(7), INTRINSICS)
    assert "no camera_info for the depth image yet" in estimate.message

    # Its own camera_info (the same camera here, at the identity pose): reprojected onto itself.
    from support.frames import make_camera_info

    alignment._on_depth_info(stamped(make_camera_info(0), 7))
    estimate = alignment.align(PREDICTION, header(8), INTRINSICS)  # 1 s later: no message that near
    assert estimate.state == AlignmentState.NONE and "within alignment.stamp_tolerance (0.05 s)" in estimate.message
    alignment._on_message(depth_image_16uc1(true_depth(PREDICTION), 9))
    estimate = alignment.align(PREDICTION, header(9), INTRINSICS)
    assert estimate.state == AlignmentState.CONVERGING, estimate.message
    assert estimate.scale == pytest.approx(SCALE, rel=1e-3)


def test_the_newest_messages_are_kept_and_unsubscribe_forgets_them():
    from dpt_ros.ros.camera_alignment import ALIGNMENT_HISTORY

    alignment = camera_alignment("depth_image")
    for sec in range(ALIGNMENT_HISTORY + 5):
        alignment._on_message(depth_image_16uc1(true_depth(PREDICTION), sec))
    assert alignment.received == ALIGNMENT_HISTORY + 5
    assert [m.header.stamp.sec for m in alignment._messages] == list(range(5, ALIGNMENT_HISTORY + 5))
    alignment.unsubscribe()
    assert not alignment._messages
