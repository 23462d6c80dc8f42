"""One camera's publishers, and the messages made from the pipeline's outputs.

Every output carries the input image's header (stamp and optical frame, REP 103). Depth images of
either kind (metric depth/image, relative depth/relative) are accompanied by depth/camera_info
when the image has a camera_info that describes it.
"""
from __future__ import annotations

import array

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from dpt_ros.cloud import to_pointcloud2
from dpt_ros.image_codec import array_to_image_fields
from dpt_ros.labels import ADE20K_CLASSES, ADE20K_COLORS_PACKED, IGNORE_LABEL
from dpt_ros.msg import DepthAlignment, InferenceStats, LabelInfo
from dpt_ros.pipeline import OutputRequest


def qos_profile(reliability: str, depth: int, durability=DurabilityPolicy.VOLATILE) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth, durability=durability,
        reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE)


def image_message(pixels: np.ndarray, encoding: str, header) -> Image:
    return Image(header=header, **array_to_image_fields(pixels, encoding))


def depth_camera_info(info: CameraInfo, header, height: int, width: int, intrinsics) -> CameraInfo:
    """The depth image's camera_info, under the image's header (consumers pair by exact stamp).

    When the camera_info describes the image as it is (same size, or the image is its binned/ROI
    output) it is passed on unchanged; when the image is a uniformly rescaled one, K and P are
    rescaled to the image's intrinsics and binning/ROI cleared, as image_proc's resize does."""
    if (info.height, info.width) == (height, width) or info.binning_x > 1 or info.binning_y > 1 or info.roi.width:
        return CameraInfo(header=header, height=info.height, width=info.width,
                          distortion_model=info.distortion_model, d=info.d, k=info.k, r=info.r, p=info.p,
                          binning_x=info.binning_x, binning_y=info.binning_y, roi=info.roi)
    fx, fy, cx, cy = intrinsics
    sx, sy = fx / info.p[0], fy / info.p[5]
    k = list(info.k)
    k[0], k[2], k[4], k[5] = k[0] * sx, k[2] * sx, k[4] * sy, k[5] * sy
    p = list(info.p)
    p[0], p[2], p[3], p[5], p[6], p[7] = fx, cx, p[3] * sx, fy, cy, p[7] * sy
    return CameraInfo(header=header, height=height, width=width, distortion_model=info.distortion_model,
                      d=info.d, k=k, r=info.r, p=p)


class CameraOutputs:
    """The publishers of one camera (topic names relative to ``prefix``); depth/alignment only when
    ``alignment`` (alignment.source is set)."""

    def __init__(self, node, prefix: str, qos: QoSProfile, alignment: bool = False):
        self._node = node
        self.depth = node.create_publisher(Image, prefix + "depth/image", qos)
        self.depth_info = node.create_publisher(CameraInfo, prefix + "depth/camera_info", qos)
        self.relative = node.create_publisher(Image, prefix + "depth/relative", qos)
        self.depth_colored = node.create_publisher(Image, prefix + "depth/colored", qos)
        self.labels = node.create_publisher(Image, prefix + "segmentation/labels", qos)
        self.labels_colored = node.create_publisher(Image, prefix + "segmentation/colored", qos)
        self.label_info = node.create_publisher(
            LabelInfo, prefix + "segmentation/label_info",
            qos_profile("reliable", 1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.points = node.create_publisher(PointCloud2, prefix + "points", qos)
        self.stats = node.create_publisher(InferenceStats, f"~/{prefix}stats", qos)
        self.alignment = node.create_publisher(DepthAlignment, prefix + "depth/alignment", qos) if alignment else None

    def destroy(self) -> None:
        for publisher in (self.depth, self.depth_info, self.relative, self.depth_colored, self.labels,
                          self.labels_colored, self.label_info, self.points, self.stats, self.alignment):
            if publisher is not None:
                self._node.destroy_publisher(publisher)

    def request(self, metric: bool, cloud_possible: bool, colored_enabled: bool) -> OutputRequest:
        """Which outputs someone listens to: only those are computed. ``metric``: the frame may
        have metric depth (with online alignment: if the alignment allows); ``cloud_possible``:
        the cloud is enabled and the frame has usable intrinsics."""
        def wanted(publisher) -> bool:
            return publisher.get_subscription_count() > 0

        cloud = cloud_possible and metric and wanted(self.points)
        return OutputRequest(
            depth_metric=metric and (wanted(self.depth) or wanted(self.depth_info)),
            depth_relative=wanted(self.relative) or (not metric and wanted(self.depth_info)),
            depth_colored=colored_enabled and wanted(self.depth_colored),
            labels=wanted(self.labels),  # a cloud gets its labels on the device (pipeline.needed_tasks)
            labels_colored=colored_enabled and wanted(self.labels_colored),
            cloud=cloud,
            alignment=self.alignment is not None and wanted(self.alignment))

    def publish(self, outputs, header, depth_info: CameraInfo | None) -> None:
        if outputs.depth_metric is not None and self.depth.get_subscription_count():
            self.depth.publish(image_message(outputs.depth_metric, "32FC1", header))
        if outputs.depth_relative is not None and self.relative.get_subscription_count():
            self.relative.publish(image_message(outputs.depth_relative, "32FC1", header))
        if depth_info is not None and (outputs.depth_metric is not None or outputs.depth_relative is not None):
            self.depth_info.publish(depth_info)
        if outputs.depth_colored is not None:
            self.depth_colored.publish(image_message(outputs.depth_colored, "rgb8", header))
        if outputs.labels is not None and self.labels.get_subscription_count():
            self.labels.publish(image_message(outputs.labels, "mono8", header))
        if outputs.labels_colored is not None:
            self.labels_colored.publish(image_message(outputs.labels_colored, "rgb8", header))
        if outputs.cloud is not None:
            self.points.publish(to_pointcloud2(outputs.cloud, header, PointCloud2, PointField))

    def publish_alignment(self, estimate, header) -> None:
        """depth/alignment for the frame of ``header`` (an AlignmentEstimate of dpt_ros.alignment)."""
        self.alignment.publish(DepthAlignment(header=header, **estimate.message_fields()))

    def publish_label_info(self, model_variant: str, stamp) -> None:
        info = LabelInfo(model_variant=model_variant, class_names=list(ADE20K_CLASSES),
                         colors=array.array("I", ADE20K_COLORS_PACKED.tolist()), ignore_id=IGNORE_LABEL)
        info.header.stamp = stamp
        self.label_info.publish(info)
