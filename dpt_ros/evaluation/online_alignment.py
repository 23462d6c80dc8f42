"""Online alignment in evaluate_bag: dpt_node's alignment.* run over a bag, and the report's three
depth rows (online-aligned, per-frame oracle, no alignment).

The sparse metric depth of a frame comes from a topic of the bag (``--align-topic``: a depth
image or a PointCloud2, the message nearest in stamp within ``--align-stamp-tolerance``) or is
simulated from its ground truth (``--simulate-sparse``, dpt_ros.evaluation.simulated_sparse).
Either way it becomes samples as dpt_node makes them (dpt_ros.sparse_depth.samples_from_message
with the node's SampleSettings) and goes through one OnlineAligner configured from the node's
alignment.* values (dpt_ros.alignment_parameters), frame after frame in bag order, so the scale
and shift of each frame are those dpt_node would publish on depth/alignment for the same frames.

One difference remains by nature: dpt_node matches a sensor message when the frame's prediction
is ready, so it only sees messages that arrived by then; the bag holds them all, and the
evaluator takes the nearest in stamp whenever it was recorded.
"""
from __future__ import annotations

import collections
import dataclasses

from dpt_ros.alignment import AlignmentEstimate, OnlineAligner
from dpt_ros.alignment_parameters import aligner_settings, sample_settings
from dpt_ros.evaluation import bag_io
from dpt_ros.evaluation.config import EvaluationConfig, EvaluationError
from dpt_ros.evaluation.metrics import DepthRowSums
from dpt_ros.evaluation.simulated_sparse import SparseSimulation
from dpt_ros.image_codec import DEPTH_ENCODINGS
from dpt_ros.sparse_depth import IDENTITY_EXTRINSIC, samples_from_message

ALIGN_TOPIC_TYPES = (bag_io.IMAGE_TYPE, bag_io.POINTCLOUD2_TYPE)  # a depth image or a lidar cloud

# The rows of the report's depth comparison, in the order shown.
ROW_ONLINE, ROW_ORACLE, ROW_NONE = "online", "oracle", "none"
ROW_TITLES = {
    ROW_ONLINE: "online-aligned (what dpt_node publishes)",
    ROW_ORACLE: "per-frame oracle (least squares against the ground truth)",
    ROW_NONE: "no alignment (the model's own metric depth)",
}
UNSCORED_NO_ALIGNMENT = "no usable online alignment"
UNSCORED_NO_PIXEL = "no valid ground-truth pixel in range"


def source_of(topics) -> str:
    """dpt_node's alignment.source of the run's sparse depth: depth_image or points."""
    return "points" if topics.align[0].msgtype == bag_io.POINTCLOUD2_TYPE else "depth_image"


def check_align_topics(reader, topics, typestore, config: EvaluationConfig) -> None:
    """Refuse, before any work, an --align-topic the run cannot use (EvaluationError, one line):
    the topic types themselves are checked by InputTopics.resolve."""
    if not config.align_topic:
        return
    topic = config.align_topic
    if source_of(topics) == "points":
        if config.align_camera_info_topic:
            raise EvaluationError(f"--align-camera-info-topic is for a depth image; {topic} is a PointCloud2 "
                                  "(posed by --align-extrinsic)")
        if not config.camera_info_topic:
            raise EvaluationError(f"{topic} is a PointCloud2: projecting it into the image needs --camera-info-topic")
        return
    encoding = bag_io.first_encoding(reader, topics.align, typestore)
    if encoding is not None and encoding not in DEPTH_ENCODINGS:
        raise EvaluationError(f"{topic}: the first message has encoding {encoding!r}, not a depth image; "
                              f"--align-topic takes {', '.join(DEPTH_ENCODINGS)} (REP 118) or a PointCloud2")
    if config.align_camera_info_topic is None:
        # resolved() fills in every value: an extrinsic other than the default identity was given.
        if tuple(config.align_parameters.get("alignment.extrinsic", IDENTITY_EXTRINSIC)) != IDENTITY_EXTRINSIC:
            raise EvaluationError(f"--align-extrinsic poses a reprojected depth image or a cloud; {topic} is taken "
                                  "as registered to the camera (give --align-camera-info-topic to reproject it)")
    elif not config.camera_info_topic:
        raise EvaluationError(f"reprojecting {topic} through --align-camera-info-topic needs the image's "
                              "--camera-info-topic")


# ------------------------------------------------------------------------------------------------
# Where a frame's samples come from
# ------------------------------------------------------------------------------------------------

class BagSparseDepth:
    """Samples from the --align-topic message nearest in stamp to the frame (within the tolerance)."""

    def __init__(self, reader, typestore, topics, config: EvaluationConfig, values: dict):
        self.reader, self.typestore = reader, typestore
        self.connections = topics.align
        self.topic = config.align_topic
        self.source = source_of(topics)
        self.settings = sample_settings(values)
        self.tolerance_ns = int(round(self.settings.stamp_tolerance * 1e9))
        self.index = bag_io.index_stamps(reader, topics.align, typestore)
        self.depth_infos, self._depth_info_msgs = (bag_io.messages_by_stamp(reader, topics.align_camera_info, typestore)
                                                   if topics.align_camera_info else (None, {}))

    def describe(self) -> dict:
        return {"source": self.source, "topic": self.topic, "messages": len(self.index),
                "registered": self.settings.registered if self.source == "depth_image" else None}

    def samples(self, frame, image_size: tuple[int, int], gt):
        """(DepthSamples, None) or (None, why there are none for this frame)."""
        match = self.index.nearest(frame.stamp, self.tolerance_ns)
        if match is None:
            return None, (f"nothing on {self.topic} within --align-stamp-tolerance "
                          f"({self.settings.stamp_tolerance:g} s) of the image stamp")
        stamp, bag_time = match
        try:
            message = bag_io.read_message_at(self.reader, self.connections, self.typestore, bag_time, stamp)
        except Exception as error:  # corrupt CDR: that message is lost, as a dropped one would be
            return None, f"samples unusable: {self.topic} message unreadable ({type(error).__name__})"
        depth_info = None
        if self.depth_infos is not None and len(self.depth_infos):
            # The depth camera's calibration nearest in stamp: intrinsics rarely change.
            depth_info = self._depth_info_msgs[self.depth_infos.nearest(stamp)[0]]
        try:
            return samples_from_message(self.source, message, self.settings, image_size, camera=frame.intrinsics,
                                        depth_camera=depth_info), None
        except ValueError as error:
            return None, f"samples unusable: {error}"


class SimulatedSparseDepth:
    """Samples simulated from the frame's ground-truth depth (--simulate-sparse)."""

    def __init__(self, spec: str, values: dict):
        self.simulation = SparseSimulation.parse(spec)
        self.settings = sample_settings({**values, "alignment.registered": True})

    def describe(self) -> dict:
        return {"source": "simulated", "simulation": self.simulation.describe()}

    def samples(self, frame, image_size: tuple[int, int], gt):
        if gt is None:
            return None, "no ground-truth depth for this frame to simulate samples from"
        return self.simulation.samples(gt, image_size, frame.index, self.settings.min_depth,
                                       self.settings.max_depth), None


# ------------------------------------------------------------------------------------------------
# The aligner over the run
# ------------------------------------------------------------------------------------------------

class OnlineAlignment:
    """One OnlineAligner fed frame after frame, and what it did over the run."""

    def __init__(self, sparse, values: dict):
        self.sparse = sparse
        self.values = dict(values)
        self.aligner = OnlineAligner(aligner_settings(values))
        self.states: collections.Counter = collections.Counter()

    @classmethod
    def for_run(cls, reader, typestore, topics, config: EvaluationConfig) -> "OnlineAlignment | None":
        if not config.online_alignment:
            return None
        values = dict(config.align_parameters)
        if config.simulate_sparse:
            return cls(SimulatedSparseDepth(config.simulate_sparse, values), values)
        values["alignment.registered"] = config.align_camera_info_topic is None
        return cls(BagSparseDepth(reader, typestore, topics, config, values), values)

    def align(self, frame, prediction, gt) -> AlignmentEstimate:
        """The estimate for ``frame`` (its stamp, intrinsics and index): ``prediction`` is its (H, W)
        inverse depth (pipeline.model_inverse_depth), ``gt`` its ground-truth depth or None."""
        stamp = frame.stamp * 1e-9
        samples, why = self.sparse.samples(frame, tuple(prediction.shape), gt)
        if samples is None:
            estimate = self.aligner.status(stamp)
            estimate = dataclasses.replace(estimate, message=f"{estimate.message}: {why}")
        else:
            estimate = self.aligner.update(prediction, samples, stamp)
        self.states[estimate.state.name] += 1
        return estimate

    def summary(self) -> dict:
        """report.json's "online_alignment": the source, the settings, the states over the run."""
        usable = sum(count for state, count in self.states.items() if state in ("CONVERGING", "TRACKING", "REJECTED"))
        return {**self.sparse.describe(), "parameters": self.values,
                "aligner_settings": dataclasses.asdict(self.aligner.settings),
                "frames": sum(self.states.values()), "frames_usable": usable, "states": dict(self.states)}


def estimate_record(estimate: AlignmentEstimate) -> dict:
    """A frame's estimate in report.json (what its depth/alignment message says)."""
    fields = estimate.message_fields()
    fields["state"] = estimate.state.name
    fields["usable"] = estimate.usable
    return fields


# ------------------------------------------------------------------------------------------------
# The report's depth rows
# ------------------------------------------------------------------------------------------------

class DepthRows:
    """Online-aligned, per-frame oracle and no-alignment depth scored side by side over a run.

    ``not_metric``: why the model has no metric depth of its own (the no-alignment row then has
    no numbers), None when it has."""

    def __init__(self, not_metric: str | None):
        self.not_metric = not_metric
        self.sums = {row: DepthRowSums() for row in ROW_TITLES}

    def add_frame(self, record: dict, depths: dict, gt, min_depth: float, max_depth: float) -> None:
        """Score one frame's rows: ``depths[row]`` is its metric depth at the ground truth's size,
        or the reason it has none (a string); the none row is absent for a model that is not
        metric.  The frame's metrics (or reasons) go into ``record["depth_rows"]``."""
        frame_rows = {}
        for row, depth in depths.items():
            sums = self.sums[row]
            metrics = None if isinstance(depth, str) else sums.depth.add(depth, gt, min_depth, max_depth)
            if metrics is None:
                reason = depth if isinstance(depth, str) else UNSCORED_NO_PIXEL
                sums.count_unscored(reason)
                frame_rows[row] = {"unscored": reason}
            else:
                frame_rows[row] = metrics.as_dict()
        record["depth_rows"] = frame_rows

    def summary(self) -> dict:
        """report.json's "depth_rows": per row its title, whether it is metric, frames scored and
        not scored (by reason), and the metrics over frames and over pixels."""
        rows = {}
        for row, title in ROW_TITLES.items():
            if row == ROW_NONE and self.not_metric:
                rows[row] = {"title": title, "metric": False, "note": self.not_metric}
                continue
            sums = self.sums[row]
            frame_mean, pixel_mean = sums.depth.frame_mean(), sums.depth.pixel_mean()
            rows[row] = {"title": title, "metric": True, "frames": sums.depth.frames,
                         "unscored_frames": dict(sums.unscored),
                         "depth": frame_mean.as_dict() if frame_mean else None,
                         "depth_pixel_weighted": pixel_mean.as_dict() if pixel_mean else None}
        return rows

    def merge_sums_json(self, data: dict) -> None:
        """Add another run's "sums.depth_rows" (another bag of a fleet evaluated the same way)."""
        for row, sums in data.items():
            if sums is not None:
                self.sums[row].merge(DepthRowSums.from_json(sums))

    def sums_json(self) -> dict:
        """report.json's "sums.depth_rows" (DepthRowSums.from_json and merge add them up across bags;
        the none row is None for a model that is not metric)."""
        return {row: None if row == ROW_NONE and self.not_metric else sums.to_json()
                for row, sums in self.sums.items()}


def not_metric_reason(config: EvaluationConfig) -> str | None:
    """Why a run's model has no metric depth without alignment, or None when it has."""
    if config.metric_depth:
        return None
    return (f"not metric: {config.model.variant} predicts relative inverse depth, and no --depth-scale gives it "
            "metres")
