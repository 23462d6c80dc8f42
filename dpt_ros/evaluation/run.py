"""One offline evaluation run: frames from a rosbag2 recording through DPT, scored against
ground truth, written to a result bag and a report (ROS-free: bags are read with ``rosbags``).

``evaluate(config)`` is the whole run, callable from Python; ``dpt_ros.evaluation.cli`` is its
command line.  The model is built by dpt_node's builder (``dpt_ros.model_config.build_engine``)
and every output comes from dpt_node's path (``dpt_ros.pipeline.infer_frames`` then
``derive_outputs``: metric depth, relative depth, labels, the cloud) with the node's camera model
(``dpt_ros.geometry.camera_intrinsics``), so the output bag holds what the node would publish
for the same frames and settings.  With online alignment (dpt_ros.evaluation.online_alignment)
each frame's scale and shift come between the two, as in dpt_node.
"""
from __future__ import annotations

import collections
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from dpt_ros.depth import ALIGNMENT_SCALE_SHIFT, AlignmentError, align_inverse_depth_to_metric
from dpt_ros.evaluation import bag_io
from dpt_ros.evaluation.config import EvaluationConfig, EvaluationError
from dpt_ros.evaluation.metrics import (
    ConfusionMatrix,
    DepthErrorHistogram,
    DepthMetricSums,
    load_label_map,
    remap_ground_truth_labels,
    valid_depth_mask,
)
from dpt_ros.evaluation.online_alignment import (
    ALIGN_TOPIC_TYPES,
    ROW_NONE,
    ROW_ONLINE,
    ROW_ORACLE,
    UNSCORED_NO_ALIGNMENT,
    DepthRows,
    OnlineAlignment,
    check_align_topics,
    estimate_record,
    not_metric_reason,
)
from dpt_ros.pipeline import (
    Intrinsics,
    OutputRequest,
    derive_outputs,
    infer_frames,
    metric_depth_available,
    model_inverse_depth,
    to_metric_depth,
)

NUM_SAMPLES = 4
OUTCOME_COMPLETE = "complete"
OUTCOME_INTERRUPTED = "interrupted"
OUTCOME_NO_FRAME = "no_frame_processed"


# ------------------------------------------------------------------------------------------------
# Bag topics of one run
# ------------------------------------------------------------------------------------------------

@dataclass
class InputTopics:
    """Connections of the topics a run reads, checked against the bag up front."""

    image: list
    image_compressed: bool
    camera_info: list | None
    gt_depth: list | None
    gt_labels: list | None
    copy: list
    align: list | None = None              # --align-topic (depth image or PointCloud2)
    align_camera_info: list | None = None  # --align-camera-info-topic

    @classmethod
    def resolve(cls, reader, config: EvaluationConfig) -> "InputTopics":
        image = bag_io.require_topic(reader, config.image_topic,
                                     (bag_io.IMAGE_TYPE, bag_io.COMPRESSED_IMAGE_TYPE))
        optional = {}
        for name, topic, types in (
            ("camera_info", config.camera_info_topic, (bag_io.CAMERA_INFO_TYPE,)),
            ("gt_depth", config.gt_depth_topic, (bag_io.IMAGE_TYPE,)),
            ("gt_labels", config.gt_labels_topic, (bag_io.IMAGE_TYPE,)),
            ("align", config.align_topic, ALIGN_TOPIC_TYPES),
            ("align_camera_info", config.align_camera_info_topic, (bag_io.CAMERA_INFO_TYPE,)),
        ):
            optional[name] = bag_io.require_topic(reader, topic, types) if topic else None
        copy = [c for topic in config.copy_topics for c in bag_io.require_topic(reader, topic)]
        return cls(image=image, image_compressed=image[0].msgtype == bag_io.COMPRESSED_IMAGE_TYPE,
                   copy=copy, **optional)


def frames_to_select(available: int, config: EvaluationConfig) -> int:
    """How many of ``available`` images a run selects (--stride, --max-frames)."""
    selected = -(-available // config.stride)
    return min(selected, config.max_frames) if config.max_frames else selected


def selection_start_ns(reader, config: EvaluationConfig) -> int:
    """Recording time (ns) from which images are selected (--start after the bag's first message)."""
    return reader.start_time + int(round(config.start * 1e9))


def refuse_unsupported_encoding(reader, topics: InputTopics, typestore, config: EvaluationConfig) -> None:
    """EvaluationError when the first selected image has an encoding the codec cannot decode: every
    frame of a camera has the same encoding, so the run would process nothing."""
    from dpt_ros.image_codec import COLOR_ENCODINGS

    if topics.image_compressed:
        return
    # A corrupt first message (None) is counted with the other undecodable frames.
    encoding = bag_io.first_encoding(reader, topics.image, typestore, selection_start_ns(reader, config))
    if encoding is not None and encoding not in COLOR_ENCODINGS:
        raise EvaluationError(f"{config.image_topic}: the first image has encoding {encoding!r}, which cannot "
                              f"be decoded; supported: {', '.join(COLOR_ENCODINGS)}")


@dataclass
class Frame:
    """One selected image and what the run learned about it."""

    index: int
    bag_time: int
    stamp: int = 0
    frame_id: str = ""
    rgb: np.ndarray | None = None
    camera_info: object | None = None
    intrinsics: Intrinsics | None = None  # of camera_info, for this image's size; None: no cloud
    decode_ms: float = 0.0
    batch_size: int = 1  # frames that went through the model together with this one
    timings_ms: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------

class Evaluation:
    """State and steps of one evaluation run (frames in, metrics and outputs out)."""

    def __init__(self, config: EvaluationConfig, reader, typestore, has_our_types: bool, topics: InputTopics,
                 engine, warnings: list[str]):
        self.config = config
        self.reader = reader
        self.typestore = typestore
        self.has_our_types = has_our_types
        self.topics = topics
        self.engine = engine
        self.depth_kind = engine.depth_output_kind if "depth" in config.model.tasks else None
        self.tolerance_ns = int(round(config.stamp_tolerance * 1e9))
        self.label_map = load_label_map(config.gt_label_map) if config.gt_label_map else None
        self.writer: bag_io.PredictionWriter | None = None

        self.frames: list[dict] = []
        self.depth_sums = DepthMetricSums()
        self.confusion = ConfusionMatrix()
        self.histogram = DepthErrorHistogram(config.min_depth, config.max_depth)
        self.samples: list[dict] = []
        self.sample_indices: set[int] = set()
        self.counts = dict.fromkeys(
            ("selected", "processed", "undecodable", "depth_evaluated", "depth_no_ground_truth",
             "depth_ground_truth_undecodable", "depth_not_evaluable", "labels_evaluated",
             "labels_no_ground_truth", "labels_ground_truth_undecodable", "pending_at_interrupt"),
            0)
        self.undecodable_reasons: collections.Counter = collections.Counter()
        self.timing = {"decode_ms": 0.0, "preprocess_ms": 0.0, "inference_ms": 0.0,
                       "postprocess_ms": 0.0, "evaluate_ms": 0.0, "write_ms": 0.0}
        self.interrupted = False
        self.stop_requested = False
        self.wall_s = 0.0
        self.warnings = warnings

        self.gt_depth_index = self.gt_labels_index = None
        self.camera_infos: bag_io.StampIndex | None = None
        self._camera_info_msgs: dict[int, object] = {}
        # Online alignment (--align-topic, --simulate-sparse) and the depth rows it is compared in.
        self.online: OnlineAlignment | None = None
        self.depth_rows: DepthRows | None = None

    # -- preparation ------------------------------------------------------------------------

    def warn(self, message: str) -> None:
        """A problem that costs some outputs but not the run: said once, and kept in report.json."""
        if message not in self.warnings:
            print(f"evaluate_bag: warning: {message}", file=sys.stderr)
            self.warnings.append(message)

    def index_ground_truth(self) -> None:
        """Stamp indexes of the ground-truth topics; camera infos are small and kept whole."""
        if self.topics.gt_depth:
            self.gt_depth_index = bag_io.index_stamps(self.reader, self.topics.gt_depth,
                                                      self.typestore)
        if self.topics.gt_labels:
            self.gt_labels_index = bag_io.index_stamps(self.reader, self.topics.gt_labels,
                                                       self.typestore)
        if self.topics.camera_info:
            self.camera_infos, self._camera_info_msgs = bag_io.messages_by_stamp(
                self.reader, self.topics.camera_info, self.typestore)

    def prepare_online_alignment(self) -> None:
        """The aligner and its sparse depth (the --align-topic stamps indexed), when the run aligns."""
        self.online = OnlineAlignment.for_run(self.reader, self.typestore, self.topics, self.config)
        if self.online is not None:
            self.depth_rows = DepthRows(not_metric_reason(self.config))

    def count_selected(self) -> int:
        """How many images the run will take (for the progress bar's total and ETA)."""
        available = sum(c.msgcount for c in self.topics.image) if self.config.start == 0 else 0
        if available <= 0:  # a start offset (or no per-topic counts): count what is left
            available = sum(1 for _ in self.reader.messages(connections=self.topics.image,
                                                            start=selection_start_ns(self.reader, self.config)))
        return frames_to_select(available, self.config)

    def choose_samples(self, total: int) -> None:
        """Frames shown in the report: spread evenly over the run."""
        if total > 0:
            count = min(NUM_SAMPLES, total)
            self.sample_indices = {int(round(i)) for i in np.linspace(0, total - 1, count)}

    # -- main loop ---------------------------------------------------------------------------

    def run(self, progress=None, after_frame=None) -> None:
        """Process the selected frames; KeyboardInterrupt ends the run early but cleanly.

        ``after_frame(frame_record)`` is called after each frame is finished (tests use it to
        interrupt a run at a known point).
        """
        config = self.config
        batch: list[Frame] = []
        seen = 0
        started = time.perf_counter()
        image_ids = {c.id for c in self.topics.image}
        copy_ids = {c.id for c in self.topics.copy} if self.writer is not None else set()
        # The image topic may also be copied: list each connection once.
        connections = list({c.id: c for c in [*self.topics.image, *self.topics.copy]}.values())
        previous_handlers = self._install_stop_handlers()
        try:
            for connection, bag_time, raw in self.reader.messages(
                    connections=connections, start=selection_start_ns(self.reader, config)):
                if self.stop_requested:
                    self.interrupted = True
                    break
                if connection.id in copy_ids:
                    self.writer.bag.copy(connection, bag_time, raw)
                if connection.id not in image_ids:
                    continue
                seen += 1
                if (seen - 1) % config.stride:
                    continue
                frame = Frame(index=self.counts["selected"], bag_time=bag_time)
                self.counts["selected"] += 1
                if self._decode(frame, connection, raw):
                    batch.append(frame)
                else:
                    self._finish(frame, progress, after_frame)
                if len(batch) >= config.batch_size:
                    self._process_batch(batch, progress, after_frame)
                    batch = []
                if config.max_frames and self.counts["selected"] >= config.max_frames:
                    break
            if batch:
                self._process_batch(batch, progress, after_frame)
                batch = []
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            self.wall_s = time.perf_counter() - started
            _restore_handlers(previous_handlers)
            if self.interrupted:
                self.counts["pending_at_interrupt"] = self.counts["selected"] - len(self.frames)

    def _install_stop_handlers(self) -> dict:
        """Ctrl-C / SIGTERM: finish the current batch, then stop; a second Ctrl-C stops at once.

        Stopping between frames (rather than raising KeyboardInterrupt anywhere) guarantees that
        no message is half-written into the output bag.
        """
        def request_stop(signum, _frame):
            if self.stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop_requested = True
            print("\nevaluate_bag: stopping after the current batch (Ctrl-C again to stop now)",
                  file=sys.stderr)

        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[signum] = signal.signal(signum, request_stop)
            except ValueError:  # not the main thread: the caller handles signals
                break
        return previous

    def _decode(self, frame: Frame, connection, raw) -> bool:
        from dpt_ros.image_codec import compressed_to_rgb, image_to_rgb

        begin = time.perf_counter()
        try:
            msg = self.typestore.deserialize_cdr(raw, connection.msgtype)
            frame.stamp = bag_io.stamp_to_ns(msg.header.stamp)
            frame.frame_id = msg.header.frame_id
            decode = compressed_to_rgb if self.topics.image_compressed else image_to_rgb
            # An owned, writable copy: the decoded view aliases the read-only bag buffer.
            frame.rgb = np.array(decode(msg), copy=True, order="C")
        except Exception as exc:  # corrupt CDR, unknown encoding, truncated data, bad JPEG ...
            reason = f"{type(exc).__name__}: {exc}"
            self.counts["undecodable"] += 1
            self.undecodable_reasons[reason] += 1
            frame.record = {"index": frame.index, "bag_time_ns": frame.bag_time,
                            "stamp_ns": frame.stamp or None, "status": "undecodable", "error": reason}
            return False
        frame.decode_ms = (time.perf_counter() - begin) * 1e3
        self.timing["decode_ms"] += frame.decode_ms
        self._attach_camera(frame)
        return True

    def _attach_camera(self, frame: Frame) -> None:
        """The frame's camera_info (the nearest in stamp: intrinsics rarely change) and its
        intrinsics at the image's size, as dpt_node's camera model computes them."""
        from dpt_ros.geometry import camera_intrinsics, has_distortion

        if self.camera_infos is None or not len(self.camera_infos):
            return
        nearest, _ = self.camera_infos.nearest(frame.stamp)
        info = self._camera_info_msgs[nearest]
        height, width = frame.rgb.shape[:2]
        try:
            frame.intrinsics = Intrinsics(*camera_intrinsics(info, height, width))
        except ValueError as exc:
            self.warn(f"no point cloud or depth/camera_info where camera_info does not fit the image: {exc}")
            return
        frame.camera_info = info
        if has_distortion(info):
            self.warn("camera_info has distortion coefficients: the images are not rectified, so cloud "
                      "points are slightly off where the lens distorts")

    def _request(self, frame: Frame) -> OutputRequest:
        """What to compute for a frame: what the evaluation scores and the output bag holds."""
        # With online alignment a frame is metric when its alignment is usable (known after the model ran).
        metric = self.config.metric_depth or self.online is not None
        return OutputRequest(
            depth_metric=metric, depth_relative=self.depth_kind == "relative_inverse_depth",
            labels="segmentation" in self.config.model.tasks,
            cloud=self.writer is not None and metric and frame.intrinsics is not None)

    def _process_batch(self, batch: list[Frame], progress, after_frame) -> None:
        requests = [self._request(f) for f in batch]
        results = infer_frames(self.engine, [f.rgb for f in batch], requests)
        # Then frame after frame in bag order: a frame's online alignment follows the one before.
        for frame, request, result in zip(batch, requests, results):
            begin = time.perf_counter()
            gt = self._depth_ground_truth(frame)
            self.timing["evaluate_ms"] += (time.perf_counter() - begin) * 1e3
            settings, estimate, align_ms = self._frame_settings(frame, result, gt)
            frame_outputs = derive_outputs(self.engine, frame.rgb, result, settings, request, frame.intrinsics)
            # As in dpt_node's stats: frames of one forward pass share its pre-processing and
            # inference time; post-processing (the alignment included) is each frame's own.
            timings = frame_outputs.timings_ms
            frame.timings_ms = {"preprocess": timings.get("preprocess", 0.0) / len(batch),
                                "inference": timings.get("inference", 0.0) / len(batch),
                                "postprocess": timings.get("postprocess", 0.0) + align_ms}
            frame.batch_size = len(batch)
            for key, value in frame.timings_ms.items():
                self.timing[key + "_ms"] += value
            height, width = frame.rgb.shape[:2]
            frame.record = {"index": frame.index, "bag_time_ns": frame.bag_time,
                            "stamp_ns": frame.stamp, "status": "processed",
                            "width": width, "height": height, "batch_size": len(batch),
                            "timings_ms": frame.timings_ms}
            if estimate is not None:
                frame.record["online_alignment"] = estimate_record(estimate)
            begin = time.perf_counter()
            sample = {"index": frame.index, "image": frame.rgb} if frame.index in self.sample_indices else None
            if self.depth_kind is not None:
                self._evaluate_depth(frame, frame_outputs, result, sample, gt, estimate)
            if frame_outputs.labels is not None:
                self._evaluate_labels(frame, frame_outputs.labels, sample)
            self.timing["evaluate_ms"] += (time.perf_counter() - begin) * 1e3
            if sample is not None:
                self.samples.append(sample)
            if self.writer is not None:
                begin = time.perf_counter()
                self._write_outputs(frame, frame_outputs, estimate)
                self.timing["write_ms"] += (time.perf_counter() - begin) * 1e3
            self.counts["processed"] += 1
            self._finish(frame, progress, after_frame)

    def _frame_settings(self, frame: Frame, result, gt):
        """(pipeline settings, online estimate or None, ms the alignment took) of a frame: with online
        alignment, as dpt_node sets them, metric depth from the frame's scale and shift while the
        alignment is usable and none otherwise."""
        if self.online is None or result.depth is None:
            return self.config.pipeline, None, 0.0
        begin = time.perf_counter()
        estimate = self.online.align(frame, model_inverse_depth(result.depth, self.depth_kind), gt)
        settings = self.config.pipeline.aligned((estimate.scale, estimate.shift) if estimate.usable else None)
        return settings, estimate, (time.perf_counter() - begin) * 1e3

    def _finish(self, frame: Frame, progress, after_frame) -> None:
        self.frames.append(frame.record)
        frame.rgb = None
        if progress is not None:
            progress.update(1)
        if after_frame is not None:
            after_frame(frame.record)

    # -- evaluation --------------------------------------------------------------------------

    def _ground_truth(self, index, connections, stamp: int, kind: str, decode):
        """``decode(message)`` of the ground truth matched to ``stamp``; None (and the reason
        counted) when there is none within the tolerance or it cannot be read."""
        match = index.nearest(stamp, self.tolerance_ns) if index is not None else None
        if match is None:
            self.counts[f"{kind}_no_ground_truth"] += 1
            return None
        gt_stamp, bag_time = match
        try:
            return decode(bag_io.read_message_at(self.reader, connections, self.typestore, bag_time, gt_stamp))
        except Exception:  # corrupt CDR, unknown encoding, truncated data ...
            self.counts[f"{kind}_ground_truth_undecodable"] += 1
            return None

    def _depth_ground_truth(self, frame: Frame):
        """The frame's ground-truth depth in metres (None, counted, when there is none)."""
        from dpt_ros.image_codec import depth_image_to_metres

        if self.topics.gt_depth is None:
            return None
        return self._ground_truth(self.gt_depth_index, self.topics.gt_depth, frame.stamp, "depth",
                                  depth_image_to_metres)

    def _own_metric_depth(self, outputs, result):
        """The model's metric depth without online alignment (a metric variant's, or --depth-scale's),
        None for a relative model without it: what ``depth`` scores with --alignment none."""
        if self.online is None:
            return outputs.depth_metric  # the run's settings are the model's own
        if not metric_depth_available(self.depth_kind, self.config.pipeline):
            return None
        return to_metric_depth(result.depth, self.depth_kind, self.config.pipeline)

    def _evaluate_depth(self, frame: Frame, outputs, result, sample: dict | None, gt, estimate) -> None:
        """Score the depth: ``depth`` as --alignment says (the model's metric depth as dpt_node computes
        it, or its inverse depth aligned to the ground truth), and with online alignment the three
        rows of ``depth_rows``."""
        own_metric = self._own_metric_depth(outputs, result)
        if sample is not None:
            sample["prediction"] = own_metric if own_metric is not None else outputs.depth_relative
            sample["prediction_kind"] = "metric_depth" if own_metric is not None else "relative_inverse_depth"
        if gt is None:
            return
        config = self.config
        record = frame.record
        oracle, oracle_error = None, None
        if config.alignment == ALIGNMENT_SCALE_SHIFT or self.depth_rows is not None:
            inverse = outputs.depth_relative if outputs.depth_relative is not None else _invert(own_metric)
            try:
                valid = valid_depth_mask(gt, config.min_depth, config.max_depth)
                oracle = align_inverse_depth_to_metric(_resize(inverse, gt.shape, nearest=False), gt, valid,
                                                       config.max_depth)
            except AlignmentError as exc:
                oracle_error = str(exc)
        if self.depth_rows is not None:
            self._score_rows(record, outputs, own_metric, oracle, oracle_error, gt, estimate)
        if config.alignment == ALIGNMENT_SCALE_SHIFT:
            if oracle is None:
                self.counts["depth_not_evaluable"] += 1
                record["depth_error"] = oracle_error
                return
            metric, scale, shift = oracle
            record["alignment"] = {"scale": scale, "shift": shift}
        else:
            metric = _resize(own_metric, gt.shape, nearest=False)
        metrics = self.depth_sums.add(metric, gt, config.min_depth, config.max_depth)
        if metrics is None:
            self.counts["depth_not_evaluable"] += 1
            record["depth_error"] = "no valid ground-truth pixel in range"
            return
        self.counts["depth_evaluated"] += 1
        self.histogram.add(metric, gt)
        record["depth"] = metrics.as_dict()
        if sample is not None:
            sample["metric_prediction"] = metric
            sample["gt_depth"] = gt

    def _score_rows(self, record: dict, outputs, own_metric, oracle, oracle_error: str | None, gt, estimate) -> None:
        """The frame in the three depth rows: online-aligned (the depth/image of this run, absent
        while the alignment is not usable), per-frame oracle, and the model's own metric depth."""
        depths = {
            ROW_ONLINE: _resize(outputs.depth_metric, gt.shape, nearest=False) if outputs.depth_metric is not None
            else f"{UNSCORED_NO_ALIGNMENT} (state {estimate.state.name})",
            ROW_ORACLE: oracle[0] if oracle is not None else f"oracle alignment failed: {oracle_error}",
        }
        if own_metric is not None:
            depths[ROW_NONE] = _resize(own_metric, gt.shape, nearest=False)
        if oracle is not None:
            record["oracle_alignment"] = {"scale": oracle[1], "shift": oracle[2]}
        self.depth_rows.add_frame(record, depths, gt, self.config.min_depth, self.config.max_depth)

    def _evaluate_labels(self, frame: Frame, labels: np.ndarray, sample: dict | None) -> None:
        from dpt_ros.image_codec import labels_image_to_array

        if sample is not None:
            sample["labels"] = labels
        if self.topics.gt_labels is None:
            return
        gt = self._ground_truth(
            self.gt_labels_index, self.topics.gt_labels, frame.stamp, "labels",
            lambda msg: remap_ground_truth_labels(labels_image_to_array(msg), self.label_map,
                                                  self.config.gt_label_offset))
        if gt is None:
            return
        labels = _resize(labels, gt.shape, nearest=True)
        frame_confusion = ConfusionMatrix()
        frame_confusion.add(labels, gt)
        self.confusion.merge(frame_confusion)
        metrics = frame_confusion.metrics()
        self.counts["labels_evaluated"] += 1
        if metrics is not None:
            frame.record["segmentation"] = {"pixel_accuracy": metrics.pixel_accuracy,
                                            "mean_iou": metrics.mean_iou}
        if sample is not None:
            sample["gt_labels"] = gt

    # -- output bag --------------------------------------------------------------------------

    def open_output(self, storage: str) -> None:
        from dpt_ros.model_config import segmentation_variant_for

        bag = bag_io.BagWriter(self.config.output_bag, storage, self.typestore).open()
        self.writer = bag_io.PredictionWriter(bag, self.config.output_prefix, self.has_our_types)
        if not self.has_our_types:
            self.warn("dpt_ros message definitions not found: no stats/label_info topics")
        model = self.config.model
        if "segmentation" in model.tasks:
            self.writer.write_label_info(model.segmentation_variant or segmentation_variant_for(model.variant),
                                         self.reader.start_time)

    def close_output(self) -> None:
        if self.writer is not None:
            self.writer.bag.close()

    def _write_outputs(self, frame: Frame, outputs, estimate=None) -> None:
        """The frame's outputs as dpt_node publishes them, logged at the input image's recording
        time: the output bag keeps the input's one time base whatever the camera stamps."""
        begin = time.perf_counter()
        writer, time_ns = self.writer, frame.bag_time
        header = writer.header(frame.stamp, frame.frame_id)
        if estimate is not None:  # first, as dpt_node publishes it
            writer.write_alignment(estimate, header, time_ns)
        if outputs.depth_metric is not None:
            writer.write_image("depth/image", outputs.depth_metric, "32FC1", header, time_ns)
            if frame.camera_info is not None:
                writer.write_camera_info(frame.camera_info, header, time_ns)
        if outputs.depth_relative is not None:
            writer.write_image("depth/relative", outputs.depth_relative, "32FC1", header, time_ns)
        if outputs.labels is not None:
            writer.write_image("segmentation/labels", outputs.labels, "mono8", header, time_ns)
        if outputs.cloud is not None:
            writer.write_points(outputs.cloud, header, time_ns)
        self._write_stats(frame, outputs, header, (time.perf_counter() - begin) * 1e3)

    def _write_stats(self, frame: Frame, outputs, header, publish_ms: float) -> None:
        height, width = frame.rgb.shape[:2]
        net_h, net_w = outputs.network_size
        timings = frame.timings_ms
        parts = [frame.decode_ms, timings["preprocess"], timings["inference"], timings["postprocess"], publish_ms]
        self.writer.write_stats(
            header, frame.bag_time, model_variant=self.config.model.variant,
            device=str(self.engine.device), precision=str(self.engine.precision),
            input_width=width, input_height=height, network_width=int(net_w),
            network_height=int(net_h), batch_size=frame.batch_size, decode_ms=parts[0], preprocess_ms=parts[1],
            inference_ms=parts[2], postprocess_ms=parts[3], publish_ms=parts[4],
            total_ms=float(sum(parts)), frames_received=self.counts["selected"],
            frames_processed=self.counts["processed"] + 1, frames_dropped=0,
            frames_rejected=self.counts["undecodable"], frames_failed=0)

    # -- summary -----------------------------------------------------------------------------

    def outcome(self) -> str:
        if self.interrupted:
            return OUTCOME_INTERRUPTED
        return OUTCOME_COMPLETE if self.counts["processed"] else OUTCOME_NO_FRAME

    def empty_selection(self) -> str | None:
        """Why no image was selected at all, or None when some were."""
        if self.counts["selected"] or self.interrupted:
            return None
        available = sum(c.msgcount for c in self.topics.image)
        return (f"no message on {self.config.image_topic} at or after --start {self.config.start:g} s "
                f"(the bag holds {available} on it, recorded over "
                f"{(self.reader.end_time - self.reader.start_time) / 1e9:.3f} s)")

    def summary(self) -> dict:
        """Aggregate numbers for report.json (per-frame records are in ``self.frames``).

        ``sums`` holds what adds up across runs (a fleet report over many bags merges them with
        DepthMetricSums / DepthErrorHistogram / ConfusionMatrix ``from_json`` and ``merge``)."""
        processed = self.counts["processed"]
        frame_mean = self.depth_sums.frame_mean()
        pixel_mean = self.depth_sums.pixel_mean()
        segmentation = self.confusion.metrics()
        timing = dict(self.timing)
        timing["wall_s"] = self.wall_s
        timing["frames_per_second"] = processed / self.wall_s if self.wall_s > 0 else None
        timing["mean_ms_per_frame"] = {
            k: (v / processed if processed else None) for k, v in self.timing.items()}
        summary = {
            "outcome": self.outcome(),
            "interrupted": self.interrupted,
            "counts": dict(self.counts),
            "undecodable_reasons": dict(self.undecodable_reasons),
            "empty_selection": self.empty_selection(),
            "depth_output_kind": self.depth_kind,
            "alignment": self.config.alignment if self.depth_kind else None,
            "depth": frame_mean.as_dict() if frame_mean else None,
            "depth_pixel_weighted": pixel_mean.as_dict() if pixel_mean else None,
            "segmentation": segmentation.as_dict() if segmentation else None,
            "depth_error_histogram": self.histogram.shown_json() if self.counts["depth_evaluated"] else None,
            "sums": {"depth": self.depth_sums.to_json(),
                     "depth_error_histogram": self.histogram.to_json(),
                     "confusion_matrix": self.confusion.to_json()},
            "output_topics": dict(self.writer.bag.counts) if self.writer is not None else None,
            "timing": timing,
            "warnings": self.warnings,
        }
        # Online alignment: what the aligner did, and the depth rows side by side (with their sums).
        summary["online_alignment"] = self.online.summary() if self.online is not None else None
        summary["depth_rows"] = self.depth_rows.summary() if self.depth_rows is not None else None
        if self.depth_rows is not None:
            summary["sums"]["depth_rows"] = self.depth_rows.sums_json()
        return summary


def _resize(array: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    """Prediction resized to the ground truth's resolution (bilinear depth, nearest labels)."""
    if array.shape[:2] == tuple(shape):
        return array
    import cv2

    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(array, (shape[1], shape[0]), interpolation=interpolation)


def _invert(depth: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(depth > 0, 1.0 / depth, np.nan)


# ------------------------------------------------------------------------------------------------
# The run as a function
# ------------------------------------------------------------------------------------------------

def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from dpt_ros import __version__

    found = {"dpt_ros": __version__, "python": sys.version.split()[0]}
    for package in ("torch", "timm", "rosbags", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def checked_input(reader, typestore, config: EvaluationConfig) -> InputTopics:
    """The bag's topics for ``config``, checked as a run checks them before any work: present with
    their types, copyable, and a first image that can be decoded (BagError, EvaluationError)."""
    topics = InputTopics.resolve(reader, config)
    bag_io.check_copyable(topics.copy, typestore)
    refuse_unsupported_encoding(reader, topics, typestore, config)
    check_align_topics(reader, topics, typestore, config)
    return topics


def evaluate(config: EvaluationConfig, engine=None, after_frame=None, engine_warnings=()) -> dict:
    """Run one evaluation and write its outputs; returns the report dictionary (report.json).

    Before any work (before the model is built) this raises EvaluationError or bag_io.BagError
    for a configuration or input that cannot work: invalid settings, an unreadable bag, missing
    topics, unwritable output locations, an image encoding that cannot be decoded; then
    dpt_ros.model_config.ModelLoadError if the model cannot be built.  ``engine`` replaces the
    model (tests, and evaluate_bags' workers, which load one model for many bags) and
    ``engine_warnings`` are the warnings given when it was built (kept in the report);
    ``after_frame(record)`` is called after each frame.  A run that processed no frame returns a
    report whose "outcome" says so.
    """
    from dpt_ros.model_config import build_engine, describe_compile

    config = config.resolved()
    storage = bag_io.bag_storage(config.input_bag)
    typestore, has_our_types = bag_io.make_typestore()
    reader = bag_io.open_reader(config.input_bag)
    try:
        topics = checked_input(reader, typestore, config)
        config.check_output_locations()
        warnings: list[str] = list(engine_warnings)
        if engine is None:
            def warn(message: str) -> None:
                print(f"evaluate_bag: warning: {message}", file=sys.stderr)
                warnings.append(message)

            engine = build_engine(config.model, warn)
        evaluation = Evaluation(config, reader, typestore, has_our_types, topics, engine, warnings)
        evaluation.index_ground_truth()
        evaluation.prepare_online_alignment()
        total = evaluation.count_selected()
        evaluation.choose_samples(total)
        progress = None
        if config.progress:
            from tqdm import tqdm

            progress = tqdm(total=total, unit="frame", desc="evaluate_bag", dynamic_ncols=True)
        if config.output_bag is not None:
            evaluation.open_output(storage)
        try:
            evaluation.run(progress, after_frame)
        finally:
            # A second Ctrl-C while the bag index and the report are written would leave a
            # truncated bag: finish them first.
            previous = _ignore_sigint()
            try:
                evaluation.close_output()
                if progress is not None:
                    progress.close()
                report = {
                    "configuration": config.to_json(),
                    "versions": versions(),
                    "input": {"bag": str(config.input_bag), "storage": storage,
                              "image_type": topics.image[0].msgtype,
                              "engine": {"device": str(engine.device),
                                         "precision": str(engine.precision),
                                         "compile": describe_compile(engine),
                                         "depth_output_kind": evaluation.depth_kind}},
                    **evaluation.summary(),
                    "frames": evaluation.frames,
                }
                if config.report_dir is not None:
                    from dpt_ros.evaluation.report import write_report

                    write_report(report, config.report_dir, samples=evaluation.samples,
                                 min_depth=config.min_depth, max_depth=config.max_depth,
                                 confusion=evaluation.confusion
                                 if evaluation.counts["labels_evaluated"] else None)
            finally:
                _restore_sigint(previous)
    finally:
        reader.close()
    return report


def _restore_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _ignore_sigint():
    try:
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals cannot be changed, and need not be
        return None


def _restore_sigint(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
