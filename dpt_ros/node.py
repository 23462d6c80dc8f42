"""dpt_node: camera images in; depth, labels and PointCloud2 out (the ROS adapter).

Threading: subscription callbacks only store the newest frame of their camera (newest wins; a
replaced frame is counted as dropped) and wake the worker thread, which runs the model and
publishes. The callbacks never wait for inference, and at most one frame per camera is ever
pending. With several cameras (the `cameras` parameter), the frames pending when the worker
becomes free go through the model as one batch, and each camera's outputs are published under
its own namespace with its own header.
"""
from __future__ import annotations

import array
import collections
import ctypes
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import rclpy
import rclpy.executors
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField

from dpt_ros import node_parameters as params
from dpt_ros.cloud import to_pointcloud2
from dpt_ros.geometry import intrinsics_from_projection
from dpt_ros.image_codec import ImageDecodeError, array_to_image_fields, compressed_to_rgb, image_to_rgb
from dpt_ros.labels import ADE20K_CLASSES, ADE20K_COLORS_PACKED, IGNORE_LABEL
from dpt_ros.model_config import ModelConfig, ModelLoadError, build_engine, describe_compile
from dpt_ros.msg import InferenceStats, LabelInfo
from dpt_ros.pipeline import Intrinsics, OutputRequest, PipelineSettings, metric_depth_available, process_frames

THROTTLE_S = 5.0
CAMERA_INFO_HISTORY = 30


class FrameRejected(ValueError):
    """The input frame (or its camera_info) is invalid; the frame is skipped and counted."""


@dataclass
class PendingFrame:
    msg: object
    received: float  # time.monotonic() at reception


def _descriptor(spec: params.ParameterSpec) -> ParameterDescriptor:
    restart = {"restart": " [restart needed]", "reload": " [reloads the model]", "live": ""}[spec.applies]
    descriptor = ParameterDescriptor(description=spec.description + restart,
                                     read_only=spec.applies == "restart",
                                     # doubles given as `:=10` arrive as integers; validate() checks
                                     # the type and _param() converts.
                                     dynamic_typing=isinstance(spec.default, float))
    if spec.choices:
        descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.minimum is not None and not isinstance(spec.default, bool):
        if isinstance(spec.default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum),
                                                     step=0)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.minimum),
                                                                  to_value=float(spec.maximum), step=0.0)]
    return descriptor


def _qos(reliability: str, depth: int, durability=DurabilityPolicy.VOLATILE) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth, durability=durability,
        reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE)


def _stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class CameraPort:
    """One input stream (image + camera_info) and its outputs, under an optional namespace."""

    def __init__(self, node: "DptNode", name: str, in_qos: QoSProfile, out_qos: QoSProfile):
        self.name = name
        prefix = f"{name}/" if name else ""
        self.pending: PendingFrame | None = None
        self.camera_infos: collections.deque = collections.deque(maxlen=CAMERA_INFO_HISTORY)
        self.counters = collections.Counter()
        self.pub_depth = node.create_publisher(Image, prefix + "depth/image", out_qos)
        self.pub_depth_info = node.create_publisher(CameraInfo, prefix + "depth/camera_info", out_qos)
        self.pub_relative = node.create_publisher(Image, prefix + "depth/relative", out_qos)
        self.pub_depth_colored = node.create_publisher(Image, prefix + "depth/colored", out_qos)
        self.pub_labels = node.create_publisher(Image, prefix + "segmentation/labels", out_qos)
        self.pub_labels_colored = node.create_publisher(Image, prefix + "segmentation/colored", out_qos)
        self.pub_label_info = node.create_publisher(
            LabelInfo, prefix + "segmentation/label_info",
            _qos("reliable", 1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.pub_points = node.create_publisher(PointCloud2, prefix + "points", out_qos)
        self.pub_stats = node.create_publisher(InferenceStats, f"~/{prefix}stats", out_qos)

        if node._param("image_transport") == "compressed":
            # image_transport convention: <base topic>/compressed, following remaps of the base.
            self.image_topic = node.resolve_topic_name(prefix + "image") + "/compressed"
            node.create_subscription(CompressedImage, self.image_topic, self.on_image_factory(node), in_qos)
        else:
            self.image_topic = node.resolve_topic_name(prefix + "image")
            node.create_subscription(Image, prefix + "image", self.on_image_factory(node), in_qos)
        node.create_subscription(CameraInfo, prefix + "camera_info", self.on_camera_info, in_qos)
        self.camera_info_topic = node.resolve_topic_name(prefix + "camera_info")

    def on_image_factory(self, node: "DptNode"):
        def on_image(msg) -> None:
            with node._wake:
                self.counters["received"] += 1
                if self.pending is not None:
                    self.counters["dropped"] += 1
                self.pending = PendingFrame(msg, time.monotonic())
                node._wake.notify()
        return on_image

    def on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_infos.append(msg)  # deque.append is atomic; readers copy it under the GIL


@dataclass
class DecodedFrame:
    port: CameraPort
    frame: PendingFrame
    rgb: np.ndarray
    info: CameraInfo | None
    intrinsics: Intrinsics | None
    decode_ms: float


class DptNode(Node):
    def __init__(self, **kwargs):
        super().__init__("dpt_node", **kwargs)
        for spec in params.PARAMETERS:
            try:
                self.declare_parameter(spec.name, spec.default, _descriptor(spec))
            except InvalidParameterTypeException as error:
                # A value of the wrong type (e.g. `-p input_size:=large`): one line, not a traceback.
                hint = (" (the command line reads values as YAML: quote it, e.g. -p 'name:=\"off\"')"
                        if isinstance(spec.default, str) else "")
                raise ModelLoadError(f"invalid parameter: {spec.name} must be of type {type(spec.default).__name__}"
                                     f"{hint}; {str(error).split(': ')[0]}") from None
        self.declare_parameter("cameras", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
            description="Input namespaces served by this node, batched into one forward pass (e.g. "
                        "[front, left]); unset = one camera on image/camera_info [restart needed]",
            read_only=True))
        for spec in params.PARAMETERS:
            problem = params.validate(spec.name, self._param(spec.name))
            if problem:
                raise ModelLoadError(f"invalid parameter: {problem}")
        try:
            cameras = list(self.get_parameter("cameras").value or [])
        except ParameterUninitializedException:  # declared by type only: not set = one camera
            cameras = []
        problem = params.validate_cameras(cameras)
        if problem:
            raise ModelLoadError(f"invalid parameter: {problem}")

        self._model_config = self._read_model_config()
        started = time.monotonic()
        self._engine = build_engine(self._model_config, self.get_logger().warning)
        self.get_logger().info(
            f"loaded {self._model_config.variant} ({', '.join(self._model_config.tasks)}) on "
            f"{self._engine.device} {self._engine.precision} in {time.monotonic() - started:.1f} s; "
            f"depth output: {self._engine.depth_output_kind}; forward: {describe_compile(self._engine)}")

        self._wake = threading.Condition()  # guards the ports' pending frames and _reload_requested
        self._reload_requested = False
        self._running = True
        self._recent_latency_ms: collections.deque = collections.deque(maxlen=100)
        self._recent_done: collections.deque = collections.deque(maxlen=100)
        self._last_start = 0.0
        self._last_error = ""

        in_qos = _qos(self._param("qos.input.reliability"), self._param("qos.input.depth"))
        out_qos = _qos(self._param("qos.output.reliability"), self._param("qos.output.depth"))
        self._ports = [CameraPort(self, name, in_qos, out_qos) for name in (cameras or [""])]
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._publish_label_info()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(self._param("diagnostics.period"), self._publish_diagnostics)

        self._worker = threading.Thread(target=self._work, name="dpt_worker", daemon=True)
        self._worker.start()
        for port in self._ports:
            self.get_logger().info(f"listening on {port.image_topic} and {port.camera_info_topic}")

    # ------------------------------------------------------------------ parameters
    def _param(self, name: str):
        value = self.get_parameter(name).value
        return float(value) if isinstance(params.PARAMETERS_BY_NAME[name].default, float) else value

    def _read_model_config(self) -> ModelConfig:
        return ModelConfig(
            variant=self._param("model.variant"), weights=self._param("model.weights"),
            allow_random_weights=self._param("model.allow_random_weights"),
            tasks=params.tasks_of(self._param("model.tasks")),
            segmentation_variant=self._param("model.segmentation_variant"),
            segmentation_weights=self._param("model.segmentation_weights"),
            device=self._param("device"), precision=self._param("precision"),
            compile=self._param("compile"), input_size=self._param("input_size"))

    def _on_set_parameters(self, changes) -> SetParametersResult:
        for change in changes:
            problem = params.validate(change.name, change.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        if any(change.name in params.RELOAD_PARAMETERS for change in changes):
            with self._wake:
                self._reload_requested = True
                self._wake.notify()
        return SetParametersResult(successful=True)

    def _settings(self) -> PipelineSettings:
        return PipelineSettings(
            depth_scale=self._param("depth.scale"), depth_shift=self._param("depth.shift"),
            depth_max_range=self._param("depth.max_range"), cloud_stride=self._param("cloud.stride"),
            cloud_max_range=self._param("cloud.max_range"), colored_alpha=self._param("colored.alpha"))

    # ------------------------------------------------------------------ worker
    def _has_pending(self) -> bool:
        return any(port.pending is not None for port in self._ports)

    def _work(self) -> None:
        while self._running:
            with self._wake:
                while self._running and not self._has_pending() and not self._reload_requested:
                    self._wake.wait(timeout=0.5)
                if not self._running:
                    return
                reload = self._reload_requested
                self._reload_requested = False
            if reload:
                self._reload_model()
                continue
            self._wait_for_rate_limit()
            with self._wake:
                taken = [(port, port.pending) for port in self._ports if port.pending is not None]
                for port, _ in taken:
                    port.pending = None
            try:
                self._process(taken)
            except Exception as error:  # keep the node alive; report and go on with the next frames
                for port, _ in taken:
                    port.counters["failed"] += 1
                self._last_error = f"{type(error).__name__}: {error}"
                self.get_logger().error(f"frame failed: {self._last_error}", throttle_duration_sec=THROTTLE_S)

    def _wait_for_rate_limit(self) -> None:
        rate = self._param("max_rate_hz")
        if rate > 0.0:
            # Sleep outside the lock: newer frames keep replacing the pending ones meanwhile.
            delay = self._last_start + 1.0 / rate - time.monotonic()
            if delay > 0.0:
                time.sleep(delay)
        self._last_start = time.monotonic()

    def _reload_model(self) -> None:
        config = self._read_model_config()
        if config == self._model_config:
            return
        self.get_logger().info(f"reloading model: {config}")
        try:
            engine = build_engine(config, self.get_logger().warning)
        except ModelLoadError as error:
            self._last_error = str(error)
            self.get_logger().error(f"model reload failed, keeping {self._model_config.variant}: {error}")
            return
        self._engine, self._model_config = engine, config
        self._publish_label_info()
        self.get_logger().info(f"now running {config.variant} ({', '.join(config.tasks)}) on {engine.device} "
                               f"{engine.precision}; forward: {describe_compile(engine)}")

    def _camera_info_for(self, port: CameraPort, header) -> CameraInfo | None:
        infos = list(port.camera_infos)
        if not infos:
            return None
        stamp = _stamp_ns(header.stamp)
        best = min(infos, key=lambda info: abs(_stamp_ns(info.header.stamp) - stamp))
        tolerance_ns = self._param("camera_info.stamp_tolerance") * 1e9
        if abs(_stamp_ns(best.header.stamp) - stamp) <= tolerance_ns:
            return best
        self.get_logger().warning(f"no camera_info on {port.camera_info_topic} within "
                                  "camera_info.stamp_tolerance of the image stamp; using the latest one",
                                  throttle_duration_sec=THROTTLE_S)
        return infos[-1]

    def _decode(self, port: CameraPort, frame: PendingFrame) -> DecodedFrame:
        started = time.perf_counter()
        try:
            if isinstance(frame.msg, CompressedImage):
                rgb = compressed_to_rgb(frame.msg)
            else:
                rgb = image_to_rgb(frame.msg)
        except ImageDecodeError as error:
            raise FrameRejected(str(error)) from error
        decode_ms = (time.perf_counter() - started) * 1e3
        info = self._camera_info_for(port, frame.msg.header)
        intrinsics = self._checked_intrinsics(info, *rgb.shape[:2]) if info is not None else None
        return DecodedFrame(port, frame, rgb, info, intrinsics, decode_ms)

    @staticmethod
    def _checked_intrinsics(info: CameraInfo, height: int, width: int) -> Intrinsics:
        if (info.height, info.width) != (height, width):
            raise FrameRejected(f"camera_info is {info.width}x{info.height} but the image is {width}x{height}")
        try:
            fx, fy, cx, cy = intrinsics_from_projection(info.p)
        except ValueError as error:
            raise FrameRejected(f"camera_info: {error}") from error
        return Intrinsics(fx, fy, cx, cy)

    def _output_request(self, port: CameraPort, metric: bool) -> OutputRequest:
        def wanted(publisher) -> bool:
            return publisher.get_subscription_count() > 0

        colored = self._param("colored.enabled")
        cloud = self._param("cloud.enabled") and metric and wanted(port.pub_points)
        return OutputRequest(
            depth_metric=metric and (wanted(port.pub_depth) or wanted(port.pub_depth_info)),
            depth_relative=wanted(port.pub_relative),
            depth_colored=colored and wanted(port.pub_depth_colored),
            labels=wanted(port.pub_labels) or cloud,
            labels_colored=colored and wanted(port.pub_labels_colored),
            cloud=cloud)

    def _process(self, taken: list[tuple[CameraPort, PendingFrame]]) -> None:
        decoded: list[DecodedFrame] = []
        for port, frame in taken:
            try:
                decoded.append(self._decode(port, frame))
            except FrameRejected as error:
                port.counters["rejected"] += 1
                self._last_error = f"{port.image_topic}: {error}"
                self.get_logger().error(f"frame rejected on {port.image_topic}: {error}",
                                        throttle_duration_sec=THROTTLE_S)
        if not decoded:
            return
        engine, settings = self._engine, self._settings()
        metric = "depth" in engine.tasks and metric_depth_available(engine.depth_output_kind, settings)
        requests = [self._output_request(item.port, metric) for item in decoded]
        for item, request in zip(decoded, requests):
            if request.cloud and item.intrinsics is None:
                self.get_logger().warning(f"no camera_info on {item.port.camera_info_topic} yet: points not "
                                          "published", throttle_duration_sec=THROTTLE_S)
        outputs = process_frames(engine, [item.rgb for item in decoded], settings, requests,
                                 [item.intrinsics for item in decoded])
        for item, frame_outputs in zip(decoded, outputs):
            self._publish(item, frame_outputs, engine, batch=len(decoded))

    def _publish(self, item: DecodedFrame, outputs, engine, batch: int) -> None:
        port, header = item.port, item.frame.msg.header
        started = time.perf_counter()
        if outputs.depth_metric is not None:
            port.pub_depth.publish(self._image(outputs.depth_metric, "32FC1", header))
            if item.info is not None:
                port.pub_depth_info.publish(self._depth_camera_info(item.info, header))
        if outputs.depth_relative is not None:
            port.pub_relative.publish(self._image(outputs.depth_relative, "32FC1", header))
        if outputs.depth_colored is not None:
            port.pub_depth_colored.publish(self._image(outputs.depth_colored, "rgb8", header))
        if outputs.labels is not None and port.pub_labels.get_subscription_count() > 0:
            port.pub_labels.publish(self._image(outputs.labels, "mono8", header))
        if outputs.labels_colored is not None:
            port.pub_labels_colored.publish(self._image(outputs.labels_colored, "rgb8", header))
        if outputs.cloud is not None:
            port.pub_points.publish(to_pointcloud2(outputs.cloud, header, PointCloud2, PointField))
        publish_ms = (time.perf_counter() - started) * 1e3

        port.counters["processed"] += 1
        now = time.monotonic()
        total_ms = (now - item.frame.received) * 1e3
        self._recent_latency_ms.append(total_ms)
        self._recent_done.append(now)
        net_h, net_w = outputs.network_size
        timings = outputs.timings_ms
        height, width = item.rgb.shape[:2]
        counters = port.counters
        port.pub_stats.publish(InferenceStats(
            header=header, model_variant=self._model_config.variant, device=str(engine.device),
            precision=engine.precision, input_width=width, input_height=height,
            network_width=net_w, network_height=net_h, batch_size=batch, decode_ms=item.decode_ms,
            # A batch shares one forward pass: each frame reports its share of the model stages.
            preprocess_ms=timings.get("preprocess", 0.0) / batch, inference_ms=timings.get("inference", 0.0) / batch,
            postprocess_ms=timings.get("postprocess", 0.0), publish_ms=publish_ms, total_ms=total_ms,
            frames_received=counters["received"], frames_processed=counters["processed"],
            frames_dropped=counters["dropped"], frames_rejected=counters["rejected"]))

    @staticmethod
    def _depth_camera_info(info: CameraInfo, header) -> CameraInfo:
        """The depth image's camera_info: the input's calibration (depth is at the image's
        resolution) under the image's header, so consumers matching by exact stamp pair them even
        when the driver stamps camera_info slightly differently from the image."""
        return CameraInfo(header=header, height=info.height, width=info.width,
                          distortion_model=info.distortion_model, d=info.d, k=info.k, r=info.r, p=info.p,
                          binning_x=info.binning_x, binning_y=info.binning_y, roi=info.roi)

    @staticmethod
    def _image(pixels: np.ndarray, encoding: str, header) -> Image:
        fields = array_to_image_fields(pixels, encoding)
        return Image(header=header, **fields)

    # ------------------------------------------------------------------ metadata & health
    def _publish_label_info(self) -> None:
        if "segmentation" not in self._model_config.tasks:
            return
        colors = array.array("I", ADE20K_COLORS_PACKED.tolist())
        info = LabelInfo(model_variant=self._model_config.segmentation_variant or self._model_config.variant,
                         class_names=list(ADE20K_CLASSES), colors=colors, ignore_id=IGNORE_LABEL)
        info.header.stamp = self.get_clock().now().to_msg()
        for port in self._ports:
            port.pub_label_info.publish(info)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        done = [t for t in self._recent_done if now - t <= 10.0]
        rate = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
        latencies = sorted(self._recent_latency_ms)
        p50 = latencies[len(latencies) // 2] if latencies else 0.0
        statuses = []
        for port in self._ports:
            counters = dict(port.counters)
            level, message = DiagnosticStatus.OK, "running"
            if counters.get("failed", 0) or counters.get("rejected", 0):
                level, message = DiagnosticStatus.WARN, f"last problem: {self._last_error}"
            if not counters.get("received"):
                message = f"waiting for images on {port.image_topic}"
            name = f"{self.get_name()}: DPT inference" + (f" ({port.name})" if port.name else "")
            statuses.append(DiagnosticStatus(
                level=level, name=name, message=message[:200], hardware_id=str(self._engine.device),
                values=[KeyValue(key=k, value=str(v)) for k, v in (
                    ("variant", self._model_config.variant), ("tasks", ",".join(self._model_config.tasks)),
                    ("device", self._engine.device), ("precision", self._engine.precision),
                    ("compile", describe_compile(self._engine)),
                    ("image_topic", port.image_topic),
                    ("rate_hz", f"{rate:.2f}"), ("latency_p50_ms", f"{p50:.1f}"),
                    ("frames_received", counters.get("received", 0)),
                    ("frames_processed", counters.get("processed", 0)),
                    ("frames_dropped", counters.get("dropped", 0)),
                    ("frames_rejected", counters.get("rejected", 0)),
                    ("frames_failed", counters.get("failed", 0)))]))
        array_msg = DiagnosticArray(status=statuses)
        array_msg.header.stamp = self.get_clock().now().to_msg()
        self._pub_diagnostics.publish(array_msg)

    def destroy_node(self):
        with self._wake:
            self._running = False
            self._wake.notify()
        if self._worker.is_alive():
            self._worker.join(timeout=10.0)
        return super().destroy_node()


def keep_large_buffers_mapped() -> None:
    """Stop glibc from returning every multi-MB frame buffer to the kernel on free.

    By default buffers above the dynamic mmap threshold are unmapped when freed, so each new
    frame's depth/cloud/message buffers page-fault again: measured 16-24 ms per 640x480 cloud
    frame instead of about 4 ms with these thresholds (see benchmarks/NOTES.md).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)


def main(argv=None) -> int:
    keep_large_buffers_mapped()
    rclpy.init(args=argv)
    try:
        node = DptNode()
    except ModelLoadError as error:
        # One clear line, no traceback: the usual cause is a missing checkpoint or a typo.
        print(f"[dpt_node] ERROR: {error}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
