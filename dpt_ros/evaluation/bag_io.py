"""rosbag2 reading and writing through the ``rosbags`` library (no rclpy, no ROS install needed).

Used by the offline evaluator: topic checks with readable errors, a stamp index for matching
ground truth to images, and an output bag writer that mirrors the input's storage format and is
always closed into a valid bag, even when the run is interrupted.
"""
from __future__ import annotations

import bisect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore, get_types_from_msg

# Types of our own interfaces, as rosbags spells them, and the .msg file each is read from.
OUR_MESSAGE_TYPES = {
    "dpt_ros/msg/InferenceStats": "InferenceStats.msg",
    "dpt_ros/msg/LabelInfo": "LabelInfo.msg",
    "dpt_ros/msg/DepthAlignment": "DepthAlignment.msg",
}

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2_TYPE = "sensor_msgs/msg/PointCloud2"
POINTFIELD_TYPE = "sensor_msgs/msg/PointField"

STORAGE_PLUGINS = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


class BagError(ValueError):
    """The bag cannot be used as asked (unknown storage, missing topic, wrong message type)."""


class MissingTopicError(BagError):
    """A requested topic is not in the bag; the message lists what the bag holds."""


def bag_storage(path: str | os.PathLike) -> str:
    """Storage identifier ("sqlite3" or "mcap") of a bag directory or a single storage file."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"input bag {path} does not exist")
    if path.is_dir():
        metadata = path / "metadata.yaml"
        if metadata.exists():
            import yaml

            try:
                info = yaml.safe_load(metadata.read_text()) or {}
                storage = info.get("rosbag2_bagfile_information", {}).get("storage_identifier")
            except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError) as exc:
                raise BagError(f"cannot read input bag {path}: its metadata.yaml is unreadable "
                               f"({type(exc).__name__}: {exc})".replace("\n", " ")) from None
            if storage in STORAGE_PLUGINS:
                return storage
            raise BagError(f"{path}: unsupported storage {storage!r} (expected sqlite3 or mcap)")
        files = sorted(path.glob("*.mcap")) or sorted(path.glob("*.db3"))
        if not files:
            raise BagError(f"{path} holds neither metadata.yaml nor a .mcap/.db3 file")
        path = files[0]
    suffix = path.suffix.lower()
    if suffix == ".mcap":
        return "mcap"
    if suffix == ".db3":
        return "sqlite3"
    raise BagError(f"{path}: not a rosbag2 bag (expected a directory, .mcap or .db3)")


def open_reader(path: str | os.PathLike) -> Reader:
    """The bag at ``path``, opened for reading; BagError (one line) when it cannot be read.

    rosbags checks what it opens (sqlite3's header and schema, mcap's magic bytes, footer and
    summary), so a corrupt .db3 or a truncated .mcap (a recorder killed mid-write) is refused here,
    before any work, rather than partway through a run."""
    storage = bag_storage(path)
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags' ReaderError, but also sqlite/yaml/struct errors underneath
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise BagError(f"cannot read input bag {path} ({storage}): {reason}") from None
    return reader


def find_msg_dir() -> Path | None:
    """Directory holding our .msg files: the source checkout, or an install space's share/."""
    candidates = [Path(__file__).resolve().parent.parent / "msg"]
    prefixes = [sys.prefix] + os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
    candidates += [Path(p) / "share" / "dpt_ros" / "msg" for p in prefixes if p]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in OUR_MESSAGE_TYPES.values()):
            return candidate
    return None


def make_typestore(msg_dir: str | os.PathLike | None = None):
    """Jazzy typestore plus our own messages (when their .msg files can be found).

    Returns ``(typestore, registered)`` where ``registered`` tells whether the dpt_ros types are
    available; without them the evaluator still runs, it only cannot write the stats topic.
    """
    typestore = get_typestore(Stores.ROS2_JAZZY)
    msg_dir = Path(msg_dir) if msg_dir is not None else find_msg_dir()
    if msg_dir is None:
        return typestore, False
    types = {}
    for typename, filename in OUR_MESSAGE_TYPES.items():
        types.update(get_types_from_msg((msg_dir / filename).read_text(), typename))
    typestore.register(types)
    return typestore, True


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(typestore, ns: int):
    time_cls = typestore.types["builtin_interfaces/msg/Time"]
    return time_cls(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def make_header(typestore, stamp_ns: int, frame_id: str):
    header_cls = typestore.types["std_msgs/msg/Header"]
    return header_cls(stamp=ns_to_stamp(typestore, stamp_ns), frame_id=frame_id)


def describe_topics(reader: Reader) -> str:
    """One-line listing of the bag's topics with their types and message counts."""
    items = [
        f"{topic} ({info.msgtype}, {info.msgcount} msgs)"
        for topic, info in sorted(reader.topics.items())
    ]
    return ", ".join(items) if items else "(none)"


def require_topic(reader: Reader, topic: str, allowed_types: tuple[str, ...] | None = None):
    """The bag's connections of ``topic``; a readable error when it is absent or has a wrong type."""
    info = reader.topics.get(topic)
    if info is None:
        raise MissingTopicError(
            f"topic {topic!r} is not in bag {reader.path}; the bag holds: {describe_topics(reader)}"
        )
    if allowed_types is not None and info.msgtype not in allowed_types:
        raise BagError(
            f"topic {topic!r} has type {info.msgtype}, expected one of {', '.join(allowed_types)}"
        )
    return info.connections


@dataclass
class StampIndex:
    """Header stamps of one topic, sorted, each with the bag timestamp it was recorded at.

    Ground truth is matched to an image by header stamp (the bag receive time jitters); the bag
    timestamp is then used to fetch that single message again without keeping it in memory.
    """

    stamps: list[int] = field(default_factory=list)
    bag_times: list[int] = field(default_factory=list)

    def add(self, stamp_ns: int, bag_time_ns: int) -> None:
        position = bisect.bisect_right(self.stamps, stamp_ns)
        self.stamps.insert(position, stamp_ns)
        self.bag_times.insert(position, bag_time_ns)

    def __len__(self) -> int:
        return len(self.stamps)

    def nearest(self, stamp_ns: int, tolerance_ns: int | None = None) -> tuple[int, int] | None:
        """``(stamp, bag_time)`` of the entry closest to ``stamp_ns``; None if none within tolerance."""
        if not self.stamps:
            return None
        position = bisect.bisect_left(self.stamps, stamp_ns)
        best = None
        for candidate in (position - 1, position):
            if 0 <= candidate < len(self.stamps):
                distance = abs(self.stamps[candidate] - stamp_ns)
                if best is None or distance < best[0]:
                    best = (distance, candidate)
        distance, index = best
        if tolerance_ns is not None and distance > tolerance_ns:
            return None
        return self.stamps[index], self.bag_times[index]


def index_stamps(reader: Reader, connections, typestore) -> StampIndex:
    """Build a StampIndex of a topic (messages that fail to deserialize are left out)."""
    index = StampIndex()
    for connection, bag_time, raw in reader.messages(connections=connections):
        try:
            msg = typestore.deserialize_cdr(raw, connection.msgtype)
        except Exception:  # a corrupt message: it simply cannot be matched
            continue
        index.add(stamp_to_ns(msg.header.stamp), bag_time)
    return index


def messages_by_stamp(reader: Reader, connections, typestore) -> tuple[StampIndex, dict[int, object]]:
    """Every message of a small topic (camera_info) kept whole: a StampIndex of their header stamps
    and the message of each stamp (the last one recorded where stamps repeat)."""
    index, messages = StampIndex(), {}
    for connection, _, raw in reader.messages(connections=connections):
        msg = typestore.deserialize_cdr(raw, connection.msgtype)
        stamp = stamp_to_ns(msg.header.stamp)
        index.add(stamp, stamp)
        messages[stamp] = msg
    return index, messages


def first_encoding(reader: Reader, connections, typestore, start_ns: int | None = None) -> str | None:
    """The encoding of a sensor_msgs/Image topic's first message (from ``start_ns``); None when the
    topic has none there or it cannot be read (corrupt messages are counted where they are used)."""
    for connection, _, raw in reader.messages(connections=connections, start=start_ns):
        try:
            return typestore.deserialize_cdr(raw, connection.msgtype).encoding
        except Exception:
            return None
    return None


def read_message_at(reader: Reader, connections, typestore, bag_time_ns: int, stamp_ns: int):
    """The message of ``connections`` recorded at ``bag_time_ns`` whose header stamp is ``stamp_ns``."""
    for connection, _, raw in reader.messages(
        connections=connections, start=bag_time_ns, stop=bag_time_ns + 1
    ):
        msg = typestore.deserialize_cdr(raw, connection.msgtype)
        if stamp_to_ns(msg.header.stamp) == stamp_ns:
            return msg
    return None


def _stored_definition(connection) -> dict | None:
    """msgdef/rihs01 of an input connection, when the bag stores them (mcap always does)."""
    msgdef = connection.msgdef.data if connection.msgdef else ""
    if msgdef and connection.digest:
        return {"msgdef": msgdef, "rihs01": connection.digest}
    return None


def check_copyable(connections, typestore) -> None:
    """Raise BagError for a topic whose type definition is neither in the bag nor standard."""
    for connection in connections:
        if _stored_definition(connection) is None and connection.msgtype not in typestore.types:
            raise BagError(f"cannot copy {connection.topic!r}: the bag stores no definition of "
                           f"{connection.msgtype} and it is not a standard Jazzy type")


class BagWriter:
    """Output bag in a given storage format; topics are added on first use.

    Use as a context manager: the bag is closed (index and metadata.yaml written) whatever ends
    the block, including KeyboardInterrupt, so an interrupted evaluation leaves a readable bag.
    """

    def __init__(self, path: str | os.PathLike, storage: str, typestore):
        if storage not in STORAGE_PLUGINS:
            raise BagError(f"unsupported output storage {storage!r}")
        self.path = Path(path)
        self.storage = storage
        self.typestore = typestore
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST,
                              storage_plugin=STORAGE_PLUGINS[storage])
        self._connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}
        self._open = False

    def open(self) -> "BagWriter":
        self._writer.open()
        self._open = True
        return self

    def __enter__(self) -> "BagWriter":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._open:
            self._open = False
            self._writer.close()

    def _connection(self, topic: str, msgtype: str, **definition):
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, **definition)
            self._connections[topic] = connection
            self.counts[topic] = 0
        elif connection.msgtype != msgtype:
            raise BagError(f"topic {topic!r} already written with type {connection.msgtype}")
        return connection

    def write(self, topic: str, msg, timestamp_ns: int) -> None:
        """Serialize ``msg`` (a rosbags message object) and write it at ``timestamp_ns``."""
        msgtype = msg.__msgtype__
        connection = self._connection(topic, msgtype, typestore=self.typestore)
        self._writer.write(connection, timestamp_ns, self.typestore.serialize_cdr(msg, msgtype))
        self.counts[topic] += 1

    def copy(self, source_connection, timestamp_ns: int, raw: bytes | memoryview) -> None:
        """Write an already-serialized message of the input bag unchanged, with its definition."""
        # sqlite3 bags may not store definitions; the standard types are the fallback.
        definition = _stored_definition(source_connection) or {"typestore": self.typestore}
        connection = self._connection(source_connection.topic, source_connection.msgtype, **definition)
        self._writer.write(connection, timestamp_ns, raw)
        self.counts[source_connection.topic] += 1


class PredictionWriter:
    """Writes the outputs dpt_node publishes, as the pipeline made them, under a topic prefix.

    Topics (relative to the prefix, as the node's): ``depth/image`` (32FC1 metres, REP 118),
    ``depth/relative`` (32FC1 relative inverse depth), ``depth/camera_info``,
    ``segmentation/labels`` (mono8), ``segmentation/label_info``, ``points`` (PointCloud2),
    ``stats`` (dpt_ros/msg/InferenceStats).  Every message of a frame carries the source image's
    header; the caller gives the time it is logged at (the input's recording time, so the output
    bag has the input's one time base).
    """

    def __init__(self, bag: BagWriter, prefix: str, has_our_types: bool):
        self.bag = bag
        self.prefix = prefix
        self.typestore = bag.typestore
        self.has_our_types = has_our_types

    def topic(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def header(self, stamp_ns: int, frame_id: str):
        return make_header(self.typestore, stamp_ns, frame_id)

    def write_image(self, name: str, array, encoding: str, header, time_ns: int) -> None:
        from dpt_ros.image_codec import array_to_image_fields

        fields = array_to_image_fields(array, encoding, as_numpy=True)
        self.bag.write(self.topic(name), self.typestore.types[IMAGE_TYPE](header=header, **fields), time_ns)

    def write_camera_info(self, camera_info, header, time_ns: int) -> None:
        """The input's calibration under the depth image's header (as dpt_node publishes it)."""
        from dataclasses import replace

        self.bag.write(self.topic("depth/camera_info"), replace(camera_info, header=header), time_ns)

    def write_points(self, packed_cloud, header, time_ns: int) -> None:
        from dpt_ros.cloud import to_pointcloud2

        types = self.typestore.types
        cloud = to_pointcloud2(packed_cloud, header, types[POINTCLOUD2_TYPE], types[POINTFIELD_TYPE])
        self.bag.write(self.topic("points"), cloud, time_ns)

    def write_label_info(self, variant: str, time_ns: int) -> None:
        from dpt_ros.labels import ADE20K_CLASSES, ADE20K_COLORS_PACKED, IGNORE_LABEL

        if not self.has_our_types:
            return
        label_info = self.typestore.types["dpt_ros/msg/LabelInfo"](
            header=self.header(time_ns, ""), model_variant=variant,
            class_names=list(ADE20K_CLASSES),
            colors=ADE20K_COLORS_PACKED.copy(),
            ignore_id=IGNORE_LABEL)
        self.bag.write(self.topic("segmentation/label_info"), label_info, time_ns)

    def write_alignment(self, estimate, header, time_ns: int) -> None:
        """depth/alignment (dpt_ros/msg/DepthAlignment) of an AlignmentEstimate (dpt_ros.alignment)."""
        if self.has_our_types:
            message = self.typestore.types["dpt_ros/msg/DepthAlignment"](header=header, **estimate.message_fields())
            self.bag.write(self.topic("depth/alignment"), message, time_ns)

    def write_stats(self, header, time_ns: int, **fields) -> None:
        """InferenceStats with the given fields (see msg/InferenceStats.msg)."""
        if self.has_our_types:
            stats = self.typestore.types["dpt_ros/msg/InferenceStats"](header=header, **fields)
            self.bag.write(self.topic("stats"), stats, time_ns)
