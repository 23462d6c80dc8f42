"""One camera's online alignment in dpt_node: the sparse metric depth subscriptions, a short buffer
of their messages, the sensor's pose (static alignment.extrinsic or TF), and the OnlineAligner.

For every frame whose depth the model predicted, the worker calls :meth:`CameraAlignment.align`:
the buffered message nearest in stamp to the image (within alignment.stamp_tolerance) becomes
samples (dpt_ros.sparse_depth), the aligner (dpt_ros.alignment) fits them to the frame's inverse
depth and filters the fit over frames, and the estimate it returns decides whether the frame has
metric outputs.  Messages are matched when the frame's prediction is ready, not waited for: a
sensor whose messages arrive after that is matched to later frames (a larger stamp tolerance).
"""
from __future__ import annotations

import collections
import threading
from dataclasses import replace

from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from dpt_ros.alignment import AlignmentEstimate, AlignmentState, OnlineAligner
from dpt_ros.ros.camera import CAMERA_INFO_HISTORY, ProblemLog, nearest_in_stamp
from dpt_ros.sparse_depth import samples_from_message

# Sensor messages kept per camera: a second of a 10 Hz lidar, a third of a second of a 30 Hz
# RGB-D camera; older ones are never nearer to a new frame than these.
ALIGNMENT_HISTORY = 10


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def alignment_topics(source: str) -> tuple[str, ...]:
    """The relative topics a source reads (the depth image first)."""
    return {"depth_image": ("alignment/depth", "alignment/camera_info"), "points": ("alignment/points",)}[source]


def extrinsic_of(transform) -> tuple[float, ...]:
    """x y z qx qy qz qw of a geometry_msgs Transform(Stamped): the pose of its child frame in its
    parent frame, which is what alignment.extrinsic holds for the sensor in the camera's frame."""
    transform = getattr(transform, "transform", transform)
    t, q = transform.translation, transform.rotation
    return (float(t.x), float(t.y), float(t.z), float(q.x), float(q.y), float(q.z), float(q.w))


class MissingTf2Error(RuntimeError):
    """alignment.use_tf was asked for where tf2_ros is not installed."""


class TfExtrinsics:
    """Sensor poses from TF at the image stamp (alignment.use_tf).  tf2_ros is imported here, not at
    the top: a ROS 2 install has it, the PyPI wheels this package is tested with do not."""

    def __init__(self, node):
        try:
            import tf2_ros
        except ImportError as error:
            raise MissingTf2Error(
                f"alignment.use_tf is true but tf2_ros cannot be imported ({error}); install it "
                "(ros-jazzy-tf2-ros) or set alignment.use_tf false and give the sensor's pose in "
                "alignment.extrinsic") from None
        from rclpy.time import Time

        self._time_of = Time.from_msg
        self._lookup_errors = (tf2_ros.TransformException,)
        self._buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self._buffer, node)

    def extrinsic(self, camera_frame: str, sensor_frame: str, stamp) -> tuple[float, ...]:
        """The sensor frame's pose in the camera frame at ``stamp``; LookupError when TF has none."""
        try:
            transform = self._buffer.lookup_transform(camera_frame, sensor_frame, self._time_of(stamp))
        except self._lookup_errors as error:
            raise LookupError(f"no transform from {sensor_frame!r} to {camera_frame!r} at the image stamp: "
                              f"{error}") from None
        return extrinsic_of(transform)


class CameraAlignment:
    """Subscriptions, message buffer and aligner of one camera (topics relative to ``prefix``).

    ``settings_of`` returns the live (AlignerSettings, SampleSettings); ``tf`` is a TfExtrinsics
    or None (the static extrinsic).  align() and reset() run in the worker thread, the callbacks
    in the executor's; the buffers have their own lock."""

    def __init__(self, node, prefix: str, source: str, settings_of, logger, tf: TfExtrinsics | None = None):
        self.source = source
        self._node = node
        self._settings_of = settings_of
        self._logger = logger
        self._tf = tf
        names = alignment_topics(source)
        self.topics = tuple(node.resolve_topic_name(prefix + name) for name in names)
        self._lock = threading.Lock()
        self._messages: collections.deque = collections.deque(maxlen=ALIGNMENT_HISTORY)
        self._depth_infos: collections.deque = collections.deque(maxlen=CAMERA_INFO_HISTORY)
        self._subscriptions = []
        self.received = 0
        aligner_settings, _ = settings_of()
        self._aligner = OnlineAligner(aligner_settings)
        self._last = self._aligner.last
        self._usable = False
        self._log_problem = ProblemLog(lambda message: logger.warning(message))

    @property
    def estimate(self) -> AlignmentEstimate:
        """The estimate of the last aligned frame (state NONE before the first)."""
        return self._last

    # ------------------------------------------------------------------ lifecycle
    def subscribe(self, qos) -> None:
        node = self._node
        if self.source == "depth_image":
            self._subscriptions = [node.create_subscription(Image, self.topics[0], self._on_message, qos),
                                   node.create_subscription(CameraInfo, self.topics[1], self._on_depth_info, qos)]
        else:
            self._subscriptions = [node.create_subscription(PointCloud2, self.topics[0], self._on_message, qos)]

    def unsubscribe(self) -> None:
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions = []
        with self._lock:
            self._messages.clear()
            self._depth_infos.clear()

    def reset(self, reason: str) -> None:
        """Forget the estimate (another model has another scale); worker thread only."""
        self._aligner.reset(reason)
        self._last = self._aligner.last
        self._usable = False

    # ------------------------------------------------------------------ callbacks
    def _on_message(self, msg) -> None:
        with self._lock:
            self._messages.append(msg)
            self.received += 1

    def _on_depth_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._depth_infos.append(msg)

    # ------------------------------------------------------------------ per frame (worker thread)
    def align(self, prediction, header, intrinsics) -> AlignmentEstimate:
        """The alignment for the frame of ``header`` (stamp and optical frame): ``prediction`` is
        its (H, W) inverse depth (pipeline.model_inverse_depth), ``intrinsics`` its (fx, fy, cx,
        cy) or None without a usable camera_info (then only a registered depth image can be used)."""
        aligner_settings, sample_settings = self._settings_of()
        if aligner_settings != self._aligner.settings:
            self._aligner.configure(aligner_settings)
        stamp = stamp_seconds(header.stamp)
        tolerance = sample_settings.stamp_tolerance
        with self._lock:
            message = nearest_in_stamp(list(self._messages), header.stamp, tolerance)
            depth_info = None
            if message is not None and self.source == "depth_image":
                infos = list(self._depth_infos)
                depth_info = nearest_in_stamp(infos, message.header.stamp, tolerance) or (infos[-1] if infos else None)
        if message is None:
            estimate = self._aligner.status(stamp)
            estimate = replace(estimate, message=f"{estimate.message}: nothing on {self.topics[0]} within "
                                                 f"alignment.stamp_tolerance ({tolerance:g} s) of the image stamp")
        else:
            try:
                extrinsic = None
                if self._tf is not None and sample_settings.uses_extrinsic(self.source):
                    extrinsic = self._tf.extrinsic(header.frame_id, message.header.frame_id, header.stamp)
                samples = samples_from_message(self.source, message, sample_settings, tuple(prediction.shape),
                                               camera=intrinsics, depth_camera=depth_info, extrinsic=extrinsic)
            except (ValueError, LookupError) as error:
                self._log_problem(f"{self.topics[0]}: no alignment samples for the image: {error}")
                estimate = replace(self._aligner.status(stamp), message=f"samples unusable: {error}")
            else:
                estimate = self._aligner.update(prediction, samples, stamp)
        self._log_transition(estimate)
        self._last = estimate
        return estimate

    def _log_transition(self, estimate: AlignmentEstimate) -> None:
        """Say when metric outputs start and stop, not at every frame (depth/alignment has those)."""
        if estimate.usable and not self._usable:
            self._logger.info(f"alignment to {self.topics[0]} usable: scale {estimate.scale:.6g}, shift "
                              f"{estimate.shift:.6g} ({estimate.inliers} of {estimate.samples} samples agree); "
                              "depth/image and points are metric")
        elif self._usable and not estimate.usable:
            why = "stale: no accepted fit for longer than alignment.timeout" \
                if estimate.state == AlignmentState.STALE else estimate.message
            self._logger.warning(f"no usable alignment to {self.topics[0]} ({why}): metric outputs stopped, "
                                 "depth/relative goes on")
        self._usable = estimate.usable
