"""One camera's input: image and camera_info subscriptions, their pairing by stamp, the camera model.

An image waits (at most camera_info.max_wait) for the camera_info with its own stamp, the way
message_filters' approximate-time pairing would, so a driver that publishes the image a moment
before its camera_info is served correctly. Only the newest image is kept (newest wins): a
replaced one is counted as dropped. The pending frame is guarded by the worker's condition, which
the callbacks notify.
"""
from __future__ import annotations

import collections
import re
import time
from dataclasses import dataclass, field

from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from dpt_ros.geometry import camera_intrinsics, has_distortion
from dpt_ros.image_codec import ImageDecodeError, check_pixel_count, compressed_image_size
from dpt_ros.ros.diagnostics import FrameCounters

THROTTLE_S = 5.0
CAMERA_INFO_HISTORY = 30


class ProblemLog:
    """Logs each kind of problem at most once per THROTTLE_S: rclpy's throttling is per call site,
    so one kind of bad frame would hide every other kind for the whole period."""

    def __init__(self, log, clock=time.monotonic):
        self._log = log
        self._clock = clock
        self._last: dict[str, float] = {}

    def __call__(self, message: str) -> None:
        kind = re.sub(r"[0-9.]+", "#", message)  # the same problem with other numbers is the same kind
        now = self._clock()
        if now - self._last.get(kind, -float("inf")) >= THROTTLE_S:
            self._last[kind] = now
            self._log(message)


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def nearest_in_stamp(messages, stamp, tolerance_s: float):
    """The message (with a header) nearest in stamp to ``stamp`` if within ``tolerance_s`` seconds,
    else None."""
    if not messages:
        return None
    target = stamp_ns(stamp)
    best = min(messages, key=lambda message: abs(stamp_ns(message.header.stamp) - target))
    return best if abs(stamp_ns(best.header.stamp) - target) <= tolerance_s * 1e9 else None


@dataclass
class PendingFrame:
    msg: object                       # sensor_msgs Image or CompressedImage
    received: float                   # time.monotonic() at reception
    deadline: float                   # process without a paired camera_info after this
    info: CameraInfo | None = None    # the camera_info paired by stamp, once there is one


@dataclass
class InputSettings:
    """The live parameters the camera input reads on each message."""

    stamp_tolerance_s: float = 0.01
    max_wait_s: float = 0.1
    max_input_pixels: int = 4096 * 4096


@dataclass
class CameraModel:
    """Intrinsics for one frame, computed only when an output needs them; a camera_info that cannot
    describe the image costs those outputs, never the frame."""

    info: CameraInfo | None
    height: int
    width: int
    _intrinsics: tuple | None = field(default=None, init=False)
    problem: str = field(default="", init=False)

    def intrinsics(self):
        """(fx, fy, cx, cy) at the image's resolution, or None (``problem`` says why)."""
        if self._intrinsics is None and not self.problem:
            if self.info is None:
                self.problem = "no camera_info"
            else:
                try:
                    self._intrinsics = camera_intrinsics(self.info, self.height, self.width)
                except ValueError as error:
                    self.problem = f"camera_info does not fit the image: {error}"
        return self._intrinsics


class CameraInput:
    """Subscriptions and pending frame of one camera (namespace ``name``; '' = the node's own)."""

    def __init__(self, node, name: str, condition, settings_of, logger):
        self.name = name
        self.prefix = f"{name}/" if name else ""
        self.counters = FrameCounters()
        self._node = node
        self._condition = condition          # the worker's: guards `pending`, notified on news
        self._settings_of = settings_of      # () -> InputSettings (read per message: live values)
        self._logger = logger
        self._infos: collections.deque = collections.deque(maxlen=CAMERA_INFO_HISTORY)
        self._subscriptions = []
        self._warned_distortion = False
        # rclpy identifies a log call by its source line and refuses two severities from one line,
        # so each severity gets its own line here (not logger.error/warning called inside ProblemLog).
        self.log_error = ProblemLog(lambda message: logger.error(message))
        self.log_warning = ProblemLog(lambda message: logger.warning(message))
        self.pending: PendingFrame | None = None
        compressed = node.get_parameter("image_transport").value == "compressed"
        # image_transport convention: <base topic>/compressed, following remaps of the base.
        self.image_topic = node.resolve_topic_name(self.prefix + "image") + ("/compressed" if compressed else "")
        self.camera_info_topic = node.resolve_topic_name(self.prefix + "camera_info")
        self._compressed = compressed

    # ------------------------------------------------------------------ lifecycle
    def subscribe(self, qos) -> None:
        node = self._node
        image_type = CompressedImage if self._compressed else Image
        self._subscriptions = [
            node.create_subscription(image_type, self.image_topic, self._on_image, qos),
            node.create_subscription(CameraInfo, self.camera_info_topic, self._on_camera_info, qos),
        ]

    def unsubscribe(self) -> None:
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions = []
        with self._condition:
            self.pending = None

    # ------------------------------------------------------------------ callbacks
    def _on_image(self, msg) -> None:
        settings = self._settings_of()
        self.counters.count("received")
        try:
            self._check_size(msg, settings.max_input_pixels)
        except ImageDecodeError as error:
            self.reject(str(error))
            return
        now = time.monotonic()
        info = self._info_for(msg.header.stamp, settings.stamp_tolerance_s)
        with self._condition:
            if self.pending is not None:
                self.counters.count("dropped")
            self.pending = PendingFrame(msg, now, now + settings.max_wait_s, info)
            self._condition.notify_all()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._infos.append(msg)
        tolerance_ns = self._settings_of().stamp_tolerance_s * 1e9
        with self._condition:
            pending = self.pending
            if (pending is not None and pending.info is None
                    and abs(stamp_ns(msg.header.stamp) - stamp_ns(pending.msg.header.stamp)) <= tolerance_ns):
                pending.info = msg
                self._condition.notify_all()

    def _check_size(self, msg, max_pixels: int) -> None:
        """Refuse an oversized image from its declared size, before anything decodes it."""
        if isinstance(msg, CompressedImage):
            size = compressed_image_size(msg.data)
            if size is not None:  # no readable header: the decoder rejects it with the reason
                check_pixel_count(*size, max_pixels, what="compressed image")
        else:
            check_pixel_count(msg.width, msg.height, max_pixels)

    def _info_for(self, stamp, tolerance_s: float) -> CameraInfo | None:
        """The received camera_info nearest to ``stamp`` if within the tolerance."""
        return nearest_in_stamp(list(self._infos), stamp, tolerance_s)

    # ------------------------------------------------------------------ for the worker
    def ready(self, now: float) -> bool:
        """Whether the pending frame can be processed now (caller holds the condition)."""
        return self.pending is not None and (self.pending.info is not None or now >= self.pending.deadline)

    def take(self) -> PendingFrame | None:
        """Remove and return the pending frame (caller holds the condition). A frame whose
        camera_info did not come in time gets the latest one, with a warning."""
        frame, self.pending = self.pending, None
        if frame is not None and frame.info is None and self._infos:
            frame.info = self._infos[-1]
            self.log_warning(
                f"no camera_info on {self.camera_info_topic} within camera_info.stamp_tolerance of the image "
                "stamp after camera_info.max_wait; using the latest one")
        return frame

    def camera_model(self, frame: PendingFrame, height: int, width: int) -> CameraModel:
        if frame.info is not None and not self._warned_distortion and has_distortion(frame.info):
            self._warned_distortion = True
            self._logger.warning(
                f"camera_info on {self.camera_info_topic} has non-zero distortion ({frame.info.distortion_model}): "
                "the image is not rectified, so points are back-projected slightly wrong; subscribe to a "
                "rectified image (image_proc) for accurate clouds")
        return CameraModel(frame.info, height, width)

    def reject(self, reason: str) -> None:
        self.counters.count("rejected", problem=f"{self.image_topic}: {reason}")
        self.log_error(f"frame rejected on {self.image_topic}: {reason}")
