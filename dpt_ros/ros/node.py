"""dpt_node: camera images in; depth, labels and PointCloud2 out.

A lifecycle node (REP-style managed node, as Nav2 brings up its servers): configure loads the
model and creates the publishers, activate subscribes to the cameras, deactivate stops taking
frames and keeps the model, cleanup frees the model (GPU memory included), shutdown works from any
state. With `managed` false (the default) the node configures and activates itself at start-up,
so `ros2 run` gives a working node at once.

The data path, top to bottom: camera.CameraInput (subscriptions, pairing with camera_info, newest
frame wins) -> worker.Worker (ready frames of all cameras as one batch, rate limit) ->
DptNode._process_batch (decode, dpt_ros.pipeline, publish through outputs.CameraOutputs) ->
diagnostics (counters over a recent window, /diagnostics and ~/stats). With alignment.source set,
each camera also has a camera_alignment.CameraAlignment: between the model and the outputs it fits
the frame's prediction to sparse metric depth, and that fit makes the frame's depth metric.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from dpt_ros import node_parameters as table
from dpt_ros.alignment_parameters import ALIGNMENT_PARAMETERS, aligner_settings, sample_settings
from dpt_ros.image_codec import ImageDecodeError, compressed_to_rgb, image_to_rgb
from dpt_ros.model_config import ModelLoadError, build_engine, describe_compile
from dpt_ros.msg import InferenceStats
from dpt_ros.processes import keep_large_buffers_mapped
from dpt_ros.pipeline import (
    Intrinsics, PipelineSettings, derive_outputs, derives_on_device, infer_frames, metric_depth_available,
    model_inverse_depth)
from dpt_ros.ros import diagnostics
from dpt_ros.ros.camera import THROTTLE_S, CameraInput, InputSettings
from dpt_ros.ros.camera_alignment import CameraAlignment, MissingTf2Error, TfExtrinsics
from dpt_ros.ros.outputs import CameraOutputs, depth_camera_info, qos_profile
from dpt_ros.ros.parameters import ParameterError, declare, unknown_names, value_of, values_of
from dpt_ros.ros.worker import ModelHolder, Worker

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
# How long a stopping node waits for a frame in flight: launch sends SIGTERM 5 s after SIGINT, and
# a CPU forward pass can take longer than that; the abandoned daemon thread ends with the process.
STOP_TIMEOUT_S = 1.0
ALIGNMENT_NAMES = tuple(spec.name for spec in ALIGNMENT_PARAMETERS)


class DptNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("dpt_node", **kwargs)
        self._condition = threading.Condition()  # guards the cameras' pending frames
        camera_names = declare(self)
        for name, suggestion in unknown_names(self):
            self.get_logger().warning(f"unknown parameter {name!r} ignored" +
                                      (f"; did you mean {suggestion!r}?" if suggestion else ""))
        self._model = ModelHolder(lambda config: build_engine(config, self.get_logger().warning))
        self._cameras = [CameraInput(self, name, self._condition, self._input_settings, self.get_logger())
                         for name in (camera_names or [""])]
        self._alignments = self._create_alignments()
        self._outputs: dict[CameraInput, CameraOutputs] = {}  # created on configure
        self._worker: Worker | None = None
        self._state = "unconfigured"
        self._load_error = ""
        self._reload_failure = ("", -float("inf"))  # (reason, monotonic time)
        self.finished = threading.Event()  # set by the shutdown transition: main() then returns

        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(value_of(self, "diagnostics.period"), self._on_timer)
        self.add_on_set_parameters_callback(self._validate_parameters)
        if hasattr(self, "add_post_set_parameters_callback"):  # Iron and later
            self.add_post_set_parameters_callback(self._after_parameters_set)
            self._reload_after_set = True
        else:  # Humble: no post-set callback; the validation callback requests the reload
            self._reload_after_set = False

        if not value_of(self, "managed"):
            if self.trigger_configure() != SUCCESS:
                raise ModelLoadError(self._load_error or "configure failed")
            self.trigger_activate()

    def _create_alignments(self) -> dict[CameraInput, CameraAlignment | None]:
        """One CameraAlignment per camera when alignment.source is set (else None each). Raises
        ParameterError when alignment.use_tf is asked for without tf2_ros."""
        source = value_of(self, "alignment.source")
        if source == "none":
            return {camera: None for camera in self._cameras}
        tf = None
        if value_of(self, "alignment.use_tf"):
            try:
                tf = TfExtrinsics(self)
            except MissingTf2Error as error:
                raise ParameterError(str(error)) from None
        if value_of(self, "depth.scale") > 0.0:
            self.get_logger().warning("depth.scale and depth.shift are ignored: alignment.source is set, so metric "
                                      "depth comes from the online alignment")
        return {camera: CameraAlignment(self, camera.prefix, source, self._alignment_settings, self.get_logger(), tf)
                for camera in self._cameras}

    # ------------------------------------------------------------------ lifecycle transitions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        config = table.model_config_from(values_of(self, table.RELOAD_PARAMETERS))
        started = time.monotonic()
        try:
            engine = self._model.load(config)
        except ModelLoadError as error:
            self._load_error = str(error)
            if value_of(self, "managed"):  # otherwise main() reports it as the process's one error line
                self.get_logger().error(f"configure failed: {error}")
            return FAILURE
        self.get_logger().info(
            f"loaded {config.variant} ({', '.join(config.tasks)}) on {engine.device} {engine.precision} in "
            f"{time.monotonic() - started:.1f} s; depth output: {engine.depth_output_kind}; "
            f"forward: {describe_compile(engine)}")
        out_qos = qos_profile(value_of(self, "qos.output.reliability"), value_of(self, "qos.output.depth"))
        self._outputs = {camera: CameraOutputs(self, camera.prefix, out_qos, alignment=alignment is not None)
                         for camera, alignment in self._alignments.items()}
        self._reset_alignments("model loaded")  # after a cleanup: maybe another model, another scale
        self._publish_label_info()
        self._worker = Worker(self._cameras, self._condition, self._process_batch, self._apply_reload,
                              lambda: value_of(self, "max_rate_hz"), self.get_logger())
        self._worker.start()
        self._state = "inactive"
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        in_qos = qos_profile(value_of(self, "qos.input.reliability"), value_of(self, "qos.input.depth"))
        for camera, alignment in self._alignments.items():
            camera.subscribe(in_qos)
            self.get_logger().info(f"listening on {camera.image_topic} and {camera.camera_info_topic}")
            if alignment is not None:
                alignment.subscribe(in_qos)
                self.get_logger().info(f"aligning {camera.image_topic}'s depth to {' and '.join(alignment.topics)}"
                                       f" ({alignment.source}); metric outputs only while the alignment holds")
        self._state = "active"
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self._state = "inactive"
        self.get_logger().info("deactivated: no longer taking frames; the model stays loaded")
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release(STOP_TIMEOUT_S)
        self.get_logger().info("cleaned up: model released")
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release(STOP_TIMEOUT_S)
        self._state = "finalized"
        self.finished.set()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release(STOP_TIMEOUT_S)
        return SUCCESS

    def _release(self, timeout: float) -> None:
        """Undo configure (and activate): unsubscribe, stop the worker, drop publishers and model."""
        self._unsubscribe()
        if self._worker is not None:
            self._worker.stop(timeout)
            self._worker = None
        for outputs in self._outputs.values():
            outputs.destroy()
        self._outputs = {}
        self._model.release()
        self._state = "unconfigured"

    def _unsubscribe(self) -> None:
        for camera, alignment in self._alignments.items():
            camera.unsubscribe()
            if alignment is not None:
                alignment.unsubscribe()

    def _reset_alignments(self, reason: str) -> None:
        for alignment in self._alignments.values():
            if alignment is not None:
                alignment.reset(reason)

    def stop(self) -> None:
        """Fast stop on SIGINT/SIGTERM: the frame in flight is abandoned, not reported as an error."""
        if self._worker is not None:
            self._worker.stop(STOP_TIMEOUT_S)

    # ------------------------------------------------------------------ parameters
    def _input_settings(self) -> InputSettings:
        return InputSettings(stamp_tolerance_s=value_of(self, "camera_info.stamp_tolerance"),
                             max_wait_s=value_of(self, "camera_info.max_wait"),
                             max_input_pixels=value_of(self, "max_input_pixels"))

    def _pipeline_settings(self) -> PipelineSettings:
        return PipelineSettings(
            depth_scale=value_of(self, "depth.scale"), depth_shift=value_of(self, "depth.shift"),
            depth_max_range=value_of(self, "depth.max_range"), cloud_stride=value_of(self, "cloud.stride"),
            cloud_max_range=value_of(self, "cloud.max_range"), colored_alpha=value_of(self, "colored.alpha"))

    def _alignment_settings(self):
        """The live (AlignerSettings, SampleSettings) of the alignment.* parameters."""
        values = values_of(self, ALIGNMENT_NAMES)
        return aligner_settings(values), sample_settings(values)

    def _validate_parameters(self, changes) -> SetParametersResult:
        for change in changes:
            problem = table.validate(change.name, change.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        values = values_of(self, table.PARAMETERS_BY_NAME)
        values.update({change.name: change.value for change in changes})
        problem = table.validate_together(values)
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        if not self._reload_after_set:
            self._request_reload(changes)
        return SetParametersResult(successful=True)

    def _after_parameters_set(self, changes) -> None:
        self._request_reload(changes)

    def _request_reload(self, changes) -> None:
        """All model parameters of one set_parameters call become one reload of one configuration."""
        changed = {change.name: change.value for change in changes if change.name in table.RELOAD_PARAMETERS}
        if not changed or self._worker is None:  # unconfigured: configure reads the parameters
            return
        values = values_of(self, table.RELOAD_PARAMETERS)
        values.update(changed)
        self._worker.request_reload(table.model_config_from(values))

    def _apply_reload(self, config) -> None:
        """Worker thread: load ``config``; if it cannot load, load the running one again and set the
        parameters back to it, so `ros2 param get` tells what runs."""
        running = self._model.config
        if config == running:
            return
        self.get_logger().info(f"reloading model: {config}")
        try:
            engine = self._model.load(config)
        except ModelLoadError as error:
            self._reload_failure = (str(error), time.monotonic())
            if running is None:
                self.get_logger().error(f"model reload failed: {error}; no model is loaded")
                return
            self.get_logger().error(f"model reload failed, parameters set back to the running "
                                    f"{running.variant}: {error}")
            try:
                self._model.load(running)
            except ModelLoadError as again:
                self.get_logger().error(f"cannot load the previous model again either: {again}")
            self._set_parameters_to(running)
            return
        self._reset_alignments("model reloaded")  # another model, another scale and shift
        self._publish_label_info()
        self.get_logger().info(f"now running {config.variant} ({', '.join(config.tasks)}) on {engine.device} "
                               f"{engine.precision}; forward: {describe_compile(engine)}")

    def _set_parameters_to(self, config) -> None:
        current = values_of(self, table.RELOAD_PARAMETERS)
        reverted = [Parameter(name, value=value) for name, value in table.parameter_values_of(config).items()
                    if current[name] != value]
        if reverted:
            self.set_parameters(reverted)

    # ------------------------------------------------------------------ frames
    def _stopping(self) -> bool:
        return self._worker is None or self._worker.stopping or not self.context.ok()

    def _process_batch(self, batch) -> None:
        """Worker thread: decode the frames, run them through the pipeline together, publish."""
        engine = self._model.engine
        if engine is None:
            for camera, _ in batch:
                camera.counters.count("failed", problem=f"no model loaded: {self._reload_failure[0]}")
            return
        max_pixels = value_of(self, "max_input_pixels")
        frames = []
        for camera, frame in batch:
            started = time.perf_counter()
            try:
                if isinstance(frame.msg, CompressedImage):
                    rgb = compressed_to_rgb(frame.msg, max_pixels=max_pixels)
                else:
                    rgb = image_to_rgb(frame.msg, max_pixels=max_pixels)
            except ImageDecodeError as error:
                camera.reject(str(error))
                continue
            frames.append((camera, frame, rgb, (time.perf_counter() - started) * 1e3))
        if not frames:
            return
        try:
            self._run_and_publish(engine, frames)
        except Exception as error:  # keep the node alive; report and go on with the next frames
            if self._stopping():
                return  # shutting down: the context or publishers are gone, nothing is lost
            problem = f"{type(error).__name__}: {error}"
            for camera, *_ in frames:
                camera.counters.count("failed", problem=problem)
            self.get_logger().error(f"frame failed: {problem}", throttle_duration_sec=THROTTLE_S)

    def _run_and_publish(self, engine, frames) -> None:
        settings = self._pipeline_settings()
        kind = engine.depth_output_kind
        cloud_enabled, colored = value_of(self, "cloud.enabled"), value_of(self, "colored.enabled")
        requests, models, alignments = [], [], []
        for camera, frame, rgb, _ in frames:
            outputs, alignment = self._outputs[camera], self._alignments[camera]
            # With online alignment a frame is metric if its alignment turns out usable (known
            # after the model ran), so its metric outputs are requested and may come out empty.
            metric = "depth" in engine.tasks and (alignment is not None or metric_depth_available(kind, settings))
            model = camera.camera_model(frame, *rgb.shape[:2])
            # Intrinsics only for the outputs that need them: a camera_info that does not describe
            # the image costs the cloud and depth/camera_info, never the frame.
            cloud_wanted = cloud_enabled and metric and outputs.points.get_subscription_count() > 0
            if cloud_wanted and model.intrinsics() is None:
                camera.log_warning(f"no cloud for {camera.image_topic}: {model.problem}")
            requests.append(outputs.request(metric, cloud_wanted and model.intrinsics() is not None, colored))
            models.append(model)
            alignments.append(alignment)
        images = [rgb for _, _, rgb, _ in frames]
        results = infer_frames(engine, images, requests)
        for (camera, frame, rgb, decode_ms), model, alignment, request, inferred in zip(
                frames, models, alignments, requests, results):
            outputs = self._outputs[camera]
            header = frame.msg.header
            frame_settings, estimate, align_ms = settings, None, 0.0
            if alignment is not None:
                frame_settings = settings.aligned(None)
                if inferred.has("depth"):
                    started = time.perf_counter()
                    # On a GPU the aligner reads its sample pixels from the device tensor: no depth download.
                    raw = inferred.on_device["depth"] if derives_on_device(engine) else inferred.depth
                    estimate = alignment.align(model_inverse_depth(raw, kind), header, model.intrinsics())
                    frame_settings = settings.aligned((estimate.scale, estimate.shift) if estimate.usable else None)
                    align_ms = (time.perf_counter() - started) * 1e3
            intrinsics = Intrinsics(*model.intrinsics()) if request.cloud else None
            result = derive_outputs(engine, rgb, inferred, frame_settings, request, intrinsics)
            result.timings_ms["postprocess"] = result.timings_ms.get("postprocess", 0.0) + align_ms
            started = time.perf_counter()
            info = None
            if outputs.depth_info.get_subscription_count() and model.intrinsics() is not None:
                info = depth_camera_info(model.info, header, model.height, model.width, model.intrinsics())
            if estimate is not None:  # first: a consumer of depth/image can then look its alignment up
                outputs.publish_alignment(estimate, header)
            outputs.publish(result, header, info)
            publish_ms = (time.perf_counter() - started) * 1e3
            total_ms = (time.monotonic() - frame.received) * 1e3
            camera.counters.count("processed", latency_ms=total_ms)
            self._publish_stats(camera, outputs, engine, header, result, rgb.shape, len(frames), decode_ms,
                                publish_ms, total_ms)

    # ------------------------------------------------------------------ stats, diagnostics, metadata
    def _stats_message(self, camera, engine, header) -> InferenceStats:
        totals = camera.counters.totals()
        camera.counters.reported()
        config = self._model.config
        return InferenceStats(
            header=header if header is not None else Header(), model_variant=config.variant if config else "",
            device=str(engine.device) if engine is not None else "",
            precision=engine.precision if engine is not None else "",
            frames_received=totals["received"], frames_processed=totals["processed"],
            frames_dropped=totals["dropped"], frames_rejected=totals["rejected"], frames_failed=totals["failed"])

    def _publish_stats(self, camera, outputs, engine, header, result, shape, batch, decode_ms, publish_ms,
                       total_ms) -> None:
        message = self._stats_message(camera, engine, header)
        timings = result.timings_ms
        message.input_height, message.input_width = shape[0], shape[1]
        message.network_height, message.network_width = result.network_size
        message.batch_size = batch
        message.decode_ms = decode_ms
        # A batch shares one forward pass: each frame reports its share of the model stages.
        message.preprocess_ms = timings.get("preprocess", 0.0) / batch
        message.inference_ms = timings.get("inference", 0.0) / batch
        message.postprocess_ms = timings.get("postprocess", 0.0)
        message.publish_ms, message.total_ms = publish_ms, total_ms
        outputs.stats.publish(message)

    def _on_timer(self) -> None:
        # Frames that were only rejected, failed or dropped since the last stats still show in ~/stats.
        for camera, outputs in self._outputs.items():
            if camera.counters.stats_due_on_timer():
                message = self._stats_message(camera, self._model.engine, None)
                message.header.stamp = self.get_clock().now().to_msg()
                outputs.stats.publish(message)
        self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        window = value_of(self, "diagnostics.window")
        engine, config = self._model.engine, self._model.config
        reload_reason, reload_time = self._reload_failure
        statuses = []
        for camera in self._cameras:
            recent = camera.counters.recent(window)
            totals = camera.counters.totals()
            if self._state != "active":
                health = diagnostics.Health(diagnostics.OK, f"{self._state} (lifecycle state): not taking frames")
            else:
                health = diagnostics.camera_health(recent, totals["received"] > 0, window, camera.image_topic)
            if engine is None and self._state != "unconfigured":
                health = diagnostics.Health(diagnostics.ERROR, f"no model loaded: {reload_reason}")
            elif time.monotonic() - reload_time <= window:
                health = diagnostics.Health(diagnostics.ERROR, f"model reload failed, still running "
                                                               f"{config.variant if config else 'nothing'}: "
                                                               f"{reload_reason}")
            values = {
                "lifecycle_state": self._state,
                "variant": config.variant if config else "", "tasks": ",".join(config.tasks) if config else "",
                "device": engine.device if engine is not None else "",
                "precision": engine.precision if engine is not None else "",
                "compile": describe_compile(engine) if engine is not None else "",
                "image_topic": camera.image_topic, "window_s": f"{window:g}",
                "rate_hz": f"{recent['rate_hz']:.2f}", "latency_p50_ms": f"{recent['latency_p50_ms']:.1f}",
                **{f"recent_{kind}": count for kind, count in recent["counts"].items()},
                **{f"frames_{kind}": count for kind, count in totals.items()},
                "last_reload_error": reload_reason,
            }
            name = f"{self.get_name()}: DPT inference" + (f" ({camera.name})" if camera.name else "")
            statuses.append(diagnostics.status(name, str(values["device"]), health, values))
            alignment = self._alignments[camera]
            if alignment is not None:
                estimate, topic = alignment.estimate, alignment.topics[0]
                statuses.append(diagnostics.status(
                    f"{self.get_name()}: depth alignment" + (f" ({camera.name})" if camera.name else ""), topic,
                    diagnostics.alignment_health(estimate, topic, alignment.received),
                    diagnostics.alignment_values(estimate, topic, alignment.received)))
        message = DiagnosticArray(status=statuses)
        message.header.stamp = self.get_clock().now().to_msg()
        self._pub_diagnostics.publish(message)

    def _publish_label_info(self) -> None:
        config = self._model.config
        if config is None or "segmentation" not in config.tasks:
            return
        stamp = self.get_clock().now().to_msg()
        for outputs in self._outputs.values():
            outputs.publish_label_info(config.segmentation_variant or config.variant, stamp)


class _stderr_captured:
    """Collect what C code writes to file descriptor 2 inside the block (rcl logs there directly)."""

    def __enter__(self):
        import tempfile

        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        self.text = ""
        return self

    def __exit__(self, *exc_info):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors="replace")
        self._file.close()
        return False


def _error_line(message: str) -> None:
    print(f"[dpt_node] ERROR: {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    keep_large_buffers_mapped()
    try:
        with _stderr_captured() as captured:
            rclpy.init(args=argv)
    except Exception as error:  # a missing --params-file, an unparsable -p: one line, not a traceback
        # rcl has already logged its own "[ERROR] [rcl]: Failed to parse ..." (captured above): the
        # exception says the same with the details, so only that is printed.
        text = " ".join(str(error).split())
        _error_line(f"invalid command-line arguments: {text}")
        return 2
    if captured.text:
        sys.stderr.write(captured.text)
    try:
        node = DptNode()
    except (ModelLoadError, ParameterError) as error:
        # One clear line, no traceback: the usual cause is a missing checkpoint or a typo.
        prefix = "invalid parameter: " if isinstance(error, ParameterError) else ""
        _error_line(f"{prefix}{error}")
        rclpy.try_shutdown()
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):  # Ctrl-C while the model loads
        rclpy.try_shutdown()
        return 0
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok() and not node.finished.is_set():
            executor.spin_once(timeout_sec=0.2)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # A second Ctrl-C (terminals and launch often send two) must not interrupt the clean-up.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        node.stop()
        executor.shutdown(timeout_sec=0.5)
        node.destroy_node()
        rclpy.try_shutdown()
    # Everything of ours is closed (ROS context, publishers, model). The interpreter's own teardown
    # of torch's module graph takes seconds more (measured 2.6-5.5 s on a loaded 2-core machine, more
    # if a forward pass is still running in the abandoned worker thread), past the 2 s a launch
    # system or a Ctrl-C user should wait: end the process here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
