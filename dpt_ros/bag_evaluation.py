"""One offline evaluation run: frames from a rosbag2 recording through DPT, scored against
ground truth, written to a result bag and a report (ROS-free: bags are read with ``rosbags``).

``evaluate(config)`` is the whole run; ``dpt_ros.evaluate_bag`` is its command line.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import bag_io
from .depth import (
    ALIGNMENT_SCALE_SHIFT,
    AlignmentError,
    align_inverse_depth_to_metric,
)
from .metrics import (
    ConfusionMatrix,
    DepthErrorHistogram,
    depth_metrics,
    load_label_map,
    mean_depth_metrics,
    remap_ground_truth_labels,
    valid_depth_mask,
)

# Depth ranges of the usual benchmarks (metres): KITTI (Eigen split) and NYU Depth v2 (DPT's metric
# models), Hypersim and Virtual KITTI 2 (Depth Anything V2's metric models: their max_depth).
PRESETS = {"kitti": (1e-3, 80.0), "nyu": (1e-3, 10.0), "hypersim": (1e-3, 20.0), "vkitti": (1e-3, 80.0)}
DEFAULT_DEPTH_RANGE = PRESETS["kitti"]
NUM_SAMPLES = 4


class EvaluationError(Exception):
    """A configuration or input problem reported to the user as one line."""


@dataclass
class Config:
    """Validated settings of one run (what report.json records under "configuration")."""

    input_bag: Path
    image_topic: str
    camera_info_topic: str | None
    gt_depth_topic: str | None
    gt_labels_topic: str | None
    gt_label_map: Path | None
    gt_label_offset: int
    stamp_tolerance: float
    variant: str
    tasks: tuple[str, ...]
    weights: str | None
    segmentation_weights: str | None
    device: str
    precision: str
    batch_size: int
    start: float
    stride: int
    max_frames: int | None
    preset: str | None
    min_depth: float
    max_depth: float
    alignment: str
    output_bag: Path | None
    output_prefix: str
    copy_topics: list[str]
    report_dir: Path | None
    progress: bool = True

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


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

    @classmethod
    def resolve(cls, reader, config: Config) -> "InputTopics":
        image = bag_io.require_topic(reader, config.image_topic,
                                     (bag_io.IMAGE_TYPE, bag_io.COMPRESSED_IMAGE_TYPE))
        optional = {}
        for name, topic, types in (
            ("camera_info", config.camera_info_topic, (bag_io.CAMERA_INFO_TYPE,)),
            ("gt_depth", config.gt_depth_topic, (bag_io.IMAGE_TYPE,)),
            ("gt_labels", config.gt_labels_topic, (bag_io.IMAGE_TYPE,)),
        ):
            optional[name] = bag_io.require_topic(reader, topic, types) if topic else None
        copy = [c for topic in config.copy_topics for c in bag_io.require_topic(reader, topic)]
        return cls(image=image, image_compressed=image[0].msgtype == bag_io.COMPRESSED_IMAGE_TYPE,
                   copy=copy, **optional)


@dataclass
class Frame:
    """One selected image and what the run learned about it."""

    index: int
    bag_time: int
    stamp: int = 0
    frame_id: str = ""
    rgb: np.ndarray | None = None
    decode_ms: float = 0.0
    batch_size: int = 1  # frames that went through the model together with this one
    timings_ms: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------

class Evaluation:
    """State and steps of one evaluation run (frames in, metrics and outputs out)."""

    def __init__(self, config: Config, reader, typestore, has_our_types: bool, topics: InputTopics,
                 engine):
        self.config = config
        self.reader = reader
        self.typestore = typestore
        self.has_our_types = has_our_types
        self.topics = topics
        self.engine = engine
        self.depth_kind = engine.depth_output_kind if "depth" in config.tasks else None
        self.tolerance_ns = int(round(config.stamp_tolerance * 1e9))
        self.label_map = load_label_map(config.gt_label_map) if config.gt_label_map else None
        self.writer: bag_io.PredictionWriter | None = None

        self.frames: list[dict] = []
        self.depth_per_frame = []
        self.confusion = ConfusionMatrix()
        self.histogram = DepthErrorHistogram(config.min_depth, config.max_depth)
        self.samples: list[dict] = []
        self.sample_indices: set[int] = set()
        self.counts = dict.fromkeys(
            ("selected", "processed", "undecodable", "depth_evaluated", "depth_no_ground_truth",
             "depth_ground_truth_undecodable", "depth_not_evaluable", "labels_evaluated",
             "labels_no_ground_truth", "labels_ground_truth_undecodable", "pending_at_interrupt"),
            0)
        self.timing = {"decode_ms": 0.0, "preprocess_ms": 0.0, "inference_ms": 0.0,
                       "postprocess_ms": 0.0, "evaluate_ms": 0.0, "write_ms": 0.0}
        self.interrupted = False
        self.stop_requested = False
        self.wall_s = 0.0
        self.warnings: list[str] = []

        self.gt_depth_index = self.gt_labels_index = None
        self.camera_infos: bag_io.StampIndex | None = None
        self._camera_info_msgs: dict[int, object] = {}

    # -- preparation ------------------------------------------------------------------------

    def index_ground_truth(self) -> None:
        """Stamp indexes of the ground-truth topics; camera infos are small and kept whole."""
        if self.topics.gt_depth:
            self.gt_depth_index = bag_io.index_stamps(self.reader, self.topics.gt_depth,
                                                      self.typestore)
        if self.topics.gt_labels:
            self.gt_labels_index = bag_io.index_stamps(self.reader, self.topics.gt_labels,
                                                       self.typestore)
        if self.topics.camera_info:
            self.camera_infos = bag_io.StampIndex()
            for connection, _, raw in self.reader.messages(connections=self.topics.camera_info):
                msg = self.typestore.deserialize_cdr(raw, connection.msgtype)
                stamp = bag_io.stamp_to_ns(msg.header.stamp)
                self.camera_infos.add(stamp, stamp)
                self._camera_info_msgs[stamp] = msg

    def start_time_ns(self) -> int:
        return self.reader.start_time + int(round(self.config.start * 1e9))

    def count_selected(self) -> int:
        """How many images the run will take (for the progress bar's total and ETA)."""
        available = sum(c.msgcount for c in self.topics.image) if self.config.start == 0 else 0
        if available <= 0:  # a start offset (or no per-topic counts): count what is left
            available = sum(1 for _ in self.reader.messages(connections=self.topics.image,
                                                            start=self.start_time_ns()))
        selected = -(-available // self.config.stride)
        return min(selected, self.config.max_frames) if self.config.max_frames else selected

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
                    connections=connections, start=self.start_time_ns()):
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
        from .image_codec import compressed_to_rgb, image_to_rgb

        begin = time.perf_counter()
        try:
            msg = self.typestore.deserialize_cdr(raw, connection.msgtype)
            frame.stamp = bag_io.stamp_to_ns(msg.header.stamp)
            frame.frame_id = msg.header.frame_id
            decode = compressed_to_rgb if self.topics.image_compressed else image_to_rgb
            # An owned, writable copy: the decoded view aliases the read-only bag buffer.
            frame.rgb = np.array(decode(msg), copy=True, order="C")
        except Exception as exc:  # corrupt CDR, unknown encoding, truncated data, bad JPEG ...
            self.counts["undecodable"] += 1
            frame.record = {"index": frame.index, "bag_time_ns": frame.bag_time,
                            "stamp_ns": frame.stamp or None, "status": "undecodable",
                            "error": f"{type(exc).__name__}: {exc}"}
            return False
        frame.decode_ms = (time.perf_counter() - begin) * 1e3
        self.timing["decode_ms"] += frame.decode_ms
        return True

    def _process_batch(self, batch: list[Frame], progress, after_frame) -> None:
        results = self.engine.infer([f.rgb for f in batch])
        for frame, result in zip(batch, results):
            # Frames of one infer call share its stage timings: each is charged an equal share.
            frame.timings_ms = {k: float(v) / len(batch) for k, v in result.timings_ms.items()}
            frame.batch_size = len(batch)
            for key in ("preprocess", "inference", "postprocess"):
                self.timing[key + "_ms"] += frame.timings_ms.get(key, 0.0)
            height, width = frame.rgb.shape[:2]
            frame.record = {"index": frame.index, "bag_time_ns": frame.bag_time,
                            "stamp_ns": frame.stamp, "status": "processed",
                            "width": width, "height": height, "batch_size": len(batch),
                            "timings_ms": frame.timings_ms}
            begin = time.perf_counter()
            sample = {"index": frame.index, "image": frame.rgb} if frame.index in self.sample_indices else None
            if result.depth is not None:
                self._evaluate_depth(frame, result.depth, sample)
            if result.labels is not None:
                self._evaluate_labels(frame, result.labels, sample)
            self.timing["evaluate_ms"] += (time.perf_counter() - begin) * 1e3
            if sample is not None:
                self.samples.append(sample)
            if self.writer is not None:
                begin = time.perf_counter()
                self._write_outputs(frame, result)
                self.timing["write_ms"] += (time.perf_counter() - begin) * 1e3
            self.counts["processed"] += 1
            self._finish(frame, progress, after_frame)

    def _finish(self, frame: Frame, progress, after_frame) -> None:
        self.frames.append(frame.record)
        frame.rgb = None
        if progress is not None:
            progress.update(1)
        if after_frame is not None:
            after_frame(frame.record)

    # -- evaluation --------------------------------------------------------------------------

    def _ground_truth(self, index, connections, stamp: int, kind: str):
        """The ground-truth message matched to ``stamp``, or None (and the reason counted)."""
        match = index.nearest(stamp, self.tolerance_ns) if index is not None else None
        if match is None:
            self.counts[f"{kind}_no_ground_truth"] += 1
            return None
        gt_stamp, bag_time = match
        try:
            return bag_io.read_message_at(self.reader, connections, self.typestore, bag_time,
                                          gt_stamp)
        except Exception:
            self.counts[f"{kind}_ground_truth_undecodable"] += 1
            return None

    def _evaluate_depth(self, frame: Frame, prediction: np.ndarray, sample: dict | None) -> None:
        from .image_codec import depth_image_to_metres

        if sample is not None:
            sample["prediction"] = prediction
            sample["prediction_kind"] = self.depth_kind
        if self.topics.gt_depth is None:
            return
        msg = self._ground_truth(self.gt_depth_index, self.topics.gt_depth, frame.stamp, "depth")
        if msg is None:
            return
        try:
            gt = depth_image_to_metres(msg)
        except Exception:
            self.counts["depth_ground_truth_undecodable"] += 1
            return
        config = self.config
        prediction = _resize(prediction, gt.shape, nearest=False)
        valid = valid_depth_mask(gt, config.min_depth, config.max_depth)
        record = frame.record
        try:
            if config.alignment == ALIGNMENT_SCALE_SHIFT:
                inverse = prediction if self.depth_kind == "relative_inverse_depth" else _invert(prediction)
                metric, scale, shift = align_inverse_depth_to_metric(inverse, gt, valid,
                                                                     config.max_depth)
                record["alignment"] = {"scale": scale, "shift": shift}
            else:
                metric = prediction
        except AlignmentError as exc:
            self.counts["depth_not_evaluable"] += 1
            record["depth_error"] = str(exc)
            return
        metrics = depth_metrics(metric, gt, config.min_depth, config.max_depth)
        if metrics is None:
            self.counts["depth_not_evaluable"] += 1
            record["depth_error"] = "no valid ground-truth pixel in range"
            return
        self.counts["depth_evaluated"] += 1
        self.depth_per_frame.append(metrics)
        self.histogram.add(metric, gt)
        record["depth"] = metrics.as_dict()
        if sample is not None:
            sample["metric_prediction"] = metric
            sample["gt_depth"] = gt

    def _evaluate_labels(self, frame: Frame, labels: np.ndarray, sample: dict | None) -> None:
        from .image_codec import labels_image_to_array

        if sample is not None:
            sample["labels"] = labels
        if self.topics.gt_labels is None:
            return
        msg = self._ground_truth(self.gt_labels_index, self.topics.gt_labels, frame.stamp, "labels")
        if msg is None:
            return
        try:
            gt = remap_ground_truth_labels(labels_image_to_array(msg), self.label_map,
                                           self.config.gt_label_offset)
        except Exception:
            self.counts["labels_ground_truth_undecodable"] += 1
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
        bag = bag_io.BagWriter(self.config.output_bag, storage, self.typestore).open()
        self.writer = bag_io.PredictionWriter(bag, self.config.output_prefix, self.has_our_types)
        if not self.has_our_types:
            self.warnings.append("dpt_ros message definitions not found: no stats/label_info topics")
        if "segmentation" in self.config.tasks:
            self.writer.write_label_info(self.config.variant, self.reader.start_time)

    def close_output(self) -> None:
        if self.writer is not None:
            self.writer.bag.close()

    def _write_outputs(self, frame: Frame, result) -> None:
        begin = time.perf_counter()
        header = self.writer.header(frame.stamp, frame.frame_id)
        stamp = frame.stamp
        metric = self.depth_kind == "metric_depth"
        if result.depth is not None:
            self.writer.write_depth(result.depth, metric, header, stamp)
        if result.labels is not None:
            self.writer.write_labels(result.labels, header, stamp)
        camera_info = self._camera_info(frame.stamp)
        if camera_info is not None and result.depth is not None:
            self.writer.write_camera_info(camera_info, header, stamp)
            intrinsics = self._intrinsics(camera_info, result.depth.shape)
            if metric and intrinsics is not None:
                self.writer.write_points(result.depth, intrinsics, frame.rgb, result.labels,
                                         header, stamp)
        self._write_stats(frame, header, (time.perf_counter() - begin) * 1e3)

    def _camera_info(self, stamp: int):
        if self.camera_infos is None or not len(self.camera_infos):
            return None
        # Intrinsics rarely change: the nearest CameraInfo is used whatever its stamp distance.
        nearest, _ = self.camera_infos.nearest(stamp)
        return self._camera_info_msgs[nearest]

    def _intrinsics(self, camera_info, shape):
        """(fx, fy, cx, cy) for an image of ``shape``; None (and a warning) if uncalibrated."""
        from .geometry import intrinsics_from_projection

        try:
            return intrinsics_from_projection(
                camera_info.p, from_size=(camera_info.height, camera_info.width), to_size=shape)
        except ValueError as exc:
            message = f"no point clouds: {exc}"
            if message not in self.warnings:
                self.warnings.append(message)
            return None

    def _write_stats(self, frame: Frame, header, publish_ms: float) -> None:
        height, width = frame.rgb.shape[:2]
        task = "depth" if "depth" in self.config.tasks else "segmentation"
        net_h, net_w = self.engine.network_size(height, width, task)
        timings = frame.timings_ms
        parts = [frame.decode_ms, timings.get("preprocess", 0.0), timings.get("inference", 0.0),
                 timings.get("postprocess", 0.0), publish_ms]
        self.writer.write_stats(
            header, frame.stamp, model_variant=self.config.variant,
            device=str(self.engine.device), precision=str(self.engine.precision),
            input_width=width, input_height=height, network_width=int(net_w),
            network_height=int(net_h), batch_size=frame.batch_size, decode_ms=parts[0], preprocess_ms=parts[1],
            inference_ms=parts[2], postprocess_ms=parts[3], publish_ms=parts[4],
            total_ms=float(sum(parts)), frames_received=self.counts["selected"],
            frames_processed=self.counts["processed"] + 1, frames_dropped=0,
            frames_rejected=self.counts["undecodable"])

    # -- summary -----------------------------------------------------------------------------

    def summary(self) -> dict:
        """Aggregate numbers for report.json (per-frame records are in ``self.frames``)."""
        processed = self.counts["processed"]
        aggregate_depth = mean_depth_metrics(self.depth_per_frame)
        segmentation = self.confusion.metrics()
        timing = {k: v for k, v in self.timing.items()}
        timing["wall_s"] = self.wall_s
        timing["frames_per_second"] = processed / self.wall_s if self.wall_s > 0 else None
        timing["mean_ms_per_frame"] = {
            k: (v / processed if processed else None) for k, v in self.timing.items()}
        return {
            "interrupted": self.interrupted,
            "counts": dict(self.counts),
            "depth_output_kind": self.depth_kind,
            "alignment": self.config.alignment if self.depth_kind else None,
            "depth": aggregate_depth.as_dict() if aggregate_depth else None,
            "segmentation": segmentation.as_dict() if segmentation else None,
            "confusion_matrix": {"num_classes": self.confusion.num_classes,
                                 "entries_gt_pred_count": self.confusion.nonzero_entries(),
                                 "unpredicted": self.confusion.unpredicted.tolist()}
            if self.counts["labels_evaluated"] else None,
            "depth_error_histogram": {"edges_m": self.histogram.edges.tolist(),
                                      "pixels": self.histogram.counts.tolist(),
                                      "mean_abs_rel": [None if math.isnan(v) else float(v)
                                                       for v in self.histogram.mean_abs_rel()]}
            if self.counts["depth_evaluated"] else None,
            "output_topics": dict(self.writer.bag.counts) if self.writer is not None else None,
            "timing": timing,
            "warnings": self.warnings,
        }


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

    from . import __version__

    found = {"dpt_ros": __version__, "python": sys.version.split()[0]}
    for package in ("torch", "timm", "rosbags", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def build_engine(config: Config):
    from .inference import InferenceEngine

    return InferenceEngine.from_variant(
        config.variant, tasks=config.tasks,
        weights=config.weights if "depth" in config.tasks else config.segmentation_weights,
        segmentation_weights=config.segmentation_weights if "depth" in config.tasks else None,
        device=config.device, precision=config.precision)


def evaluate(config: Config, engine=None, after_frame=None) -> dict:
    """Run one evaluation and write its outputs; returns the report dictionary.

    Raises EvaluationError (and bag_io.BagError) for unusable input before any work starts.
    """
    from rosbags.rosbag2 import Reader

    from .model.errors import WeightsError

    storage = bag_io.bag_storage(config.input_bag)
    typestore, has_our_types = bag_io.make_typestore()
    with Reader(config.input_bag) as reader:
        topics = InputTopics.resolve(reader, config)
        bag_io.check_copyable(topics.copy, typestore)
        if engine is None:
            try:
                engine = build_engine(config)
            except (ValueError, RuntimeError) as exc:
                if isinstance(exc, WeightsError):
                    raise
                raise EvaluationError(f"cannot set up the {config.variant} model: {exc}") from exc
        evaluation = Evaluation(config, reader, typestore, has_our_types, topics, engine)
        evaluation.index_ground_truth()
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
                                         "depth_output_kind": evaluation.depth_kind}},
                    **evaluation.summary(),
                    "frames": evaluation.frames,
                }
                if config.report_dir is not None:
                    from .report import write_report

                    write_report(report, config.report_dir, samples=evaluation.samples,
                                 min_depth=config.min_depth, max_depth=config.max_depth,
                                 confusion=evaluation.confusion
                                 if evaluation.counts["labels_evaluated"] else None)
            finally:
                _restore_sigint(previous)
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
