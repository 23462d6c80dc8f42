"""xyz (+ rgb, + label) arrays -> PointCloud2 bytes, and a PLY writer for the same points.

Point layout (little-endian), matching what PCL and RViz expect:

    offset 0  x      FLOAT32
    offset 4  y      FLOAT32
    offset 8  z      FLOAT32
    offset 12 rgb    FLOAT32 field holding the uint32 bits 0x00RRGGBB (PCL's packed colour)
    next      label  UINT8 (ADE20K class index, 255 = unknown)
    point_step is rounded up to a multiple of 4 so every float stays 4-byte aligned.

Packing writes whole columns through numpy views of one structured array: no per-point Python.
Message classes are passed in, so this module never imports ROS.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from dpt_ros.geometry import decimate

# sensor_msgs/PointField datatype codes.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = 1, 2, 3, 4, 5, 6, 7, 8

_ALIGN = 4


@dataclass
class PackedCloud:
    """Everything a sensor_msgs/PointCloud2 holds except the header."""

    height: int
    width: int
    point_step: int
    row_step: int
    fields: list[tuple[str, int, int, int]]  # (name, offset, datatype, count)
    data: np.ndarray  # contiguous 1-D uint8, height * row_step bytes
    is_dense: bool = False
    is_bigendian: bool = False
    # The bytearray that owns ``data`` when pack_cloud made it: rclpy copies a bytearray into its
    # message with one memcpy, so to_pointcloud2 hands this over instead of another copy.
    _buffer: bytearray | None = field(default=None, repr=False, compare=False)

    def structured_dtype(self) -> np.dtype:
        """numpy dtype of one point (rgb read as its uint32 bits)."""
        return _dtype_for(self.fields, self.point_step)

    def points(self) -> np.ndarray:
        """The data as a (height, width) structured view: fields x, y, z[, rgb][, label]."""
        return self.data.view(self.structured_dtype()).reshape(self.height, self.width)


_NUMPY_OF_DATATYPE = {FLOAT32: "<f4", UINT8: "u1", UINT32: "<u4"}


def _dtype_for(fields, point_step: int) -> np.dtype:
    names, formats, offsets = [], [], []
    for name, offset, datatype, _count in fields:
        names.append(name)
        # The rgb field is declared FLOAT32 but its bits are a packed uint32 colour.
        formats.append("<u4" if name == "rgb" else _NUMPY_OF_DATATYPE[datatype])
        offsets.append(offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": point_step})


def _layout(with_rgb: bool, with_labels: bool) -> tuple[list[tuple[str, int, int, int]], int]:
    fields = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1)]
    offset = 12
    if with_rgb:
        fields.append(("rgb", offset, FLOAT32, 1))
        offset += 4
    if with_labels:
        fields.append(("label", offset, UINT8, 1))
        offset += 1
    point_step = -(-offset // _ALIGN) * _ALIGN
    return fields, point_step


def pack_cloud(xyz: np.ndarray, rgb: np.ndarray | None = None, labels: np.ndarray | None = None,
               stride: int = 1) -> PackedCloud:
    """Pack (H, W, 3) float32 points, optional (H, W, 3) uint8 RGB and (H, W) uint8 labels.

    The cloud stays organized: with ``stride`` > 1 every stride-th row and column is kept
    (height = ceil(H / stride), width = ceil(W / stride)).  NaN points are kept as NaN, so
    ``is_dense`` is False.
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise ValueError(f"xyz must be (H, W, 3), got {xyz.shape}")
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != xyz.shape or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 {xyz.shape}, got {rgb.dtype} {rgb.shape}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != xyz.shape[:2]:
            raise ValueError(f"labels must be {xyz.shape[:2]}, got {labels.shape}")
        if labels.dtype != np.uint8:
            if labels.size and (labels.min() < 0 or labels.max() > 255):
                raise ValueError("labels must fit in uint8 (0..149, 255 = unknown)")
            labels = labels.astype(np.uint8)

    xyz = decimate(xyz, stride)
    rgb = decimate(rgb, stride) if rgb is not None else None
    labels = decimate(labels, stride) if labels is not None else None
    height, width = xyz.shape[:2]

    fields, point_step = _layout(rgb is not None, labels is not None)
    # The structured array defines the layout; it is filled through two plain views of its
    # bytes (uint8 per byte, float32 per 4 bytes - point_step is a multiple of 4), which lets
    # numpy copy whole (H, W, k) blocks instead of one field at a time.  It lives in a zeroed
    # bytearray (padding bytes are deterministic) that rclpy can take without a further copy.
    buffer = bytearray(height * width * point_step)
    points = np.frombuffer(buffer, dtype=_dtype_for(fields, point_step)).reshape(height, width)
    raw = points.view(np.uint8).reshape(height, width, point_step)
    floats = raw.view("<f4")
    floats[:, :, 0:3] = xyz
    offset = 12
    if rgb is not None:
        # 0x00RRGGBB little-endian is the byte sequence B, G, R, 0.
        raw[:, :, offset] = rgb[:, :, 2]
        raw[:, :, offset + 1] = rgb[:, :, 1]
        raw[:, :, offset + 2] = rgb[:, :, 0]
        offset += 4
    if labels is not None:
        raw[:, :, offset] = labels
    return PackedCloud(
        height=height, width=width, point_step=point_step, row_step=width * point_step,
        fields=fields, data=raw.reshape(-1), is_dense=False, is_bigendian=False, _buffer=buffer)


def _is_rclpy_class(cls) -> bool:
    # rosidl-generated Python classes expose this; rosbags dataclasses do not.
    return hasattr(cls, "get_fields_and_field_types")


def _owns(buffer: bytearray | None, data: np.ndarray) -> bool:
    """True when ``data`` is exactly the bytes of ``buffer`` (not a replaced or sliced array)."""
    if buffer is None or len(buffer) != data.nbytes or not data.flags.c_contiguous:
        return False
    return len(buffer) == 0 or np.frombuffer(buffer, np.uint8).ctypes.data == data.ctypes.data


def to_pointcloud2(packed: PackedCloud, header, pointcloud2_cls, pointfield_cls):
    """Build a PointCloud2 message of the given classes from ``packed``.

    Works with rclpy's ``sensor_msgs.msg.PointCloud2``/``PointField`` (data handed over as a
    ``bytearray``, which rclpy copies into its array.array in one go) and with the
    ``rosbags`` typestore dataclasses (all fields as keyword arguments, data as uint8 numpy).
    """
    fields = [pointfield_cls(name=name, offset=offset, datatype=datatype, count=count)
              for name, offset, datatype, count in packed.fields]
    if _is_rclpy_class(pointcloud2_cls):
        # rclpy's setter turns a bytearray into its array.array with one memcpy (a numpy array
        # would be converted element by element).  With ROS_PYTHON_CHECK_FIELDS=1 rclpy checks
        # every byte whatever type it gets, so that debug mode is slow regardless.
        if _owns(packed._buffer, packed.data):
            data = packed._buffer
        else:
            data = bytearray(packed.data)  # one copy through the buffer protocol
    else:
        data = packed.data
    return pointcloud2_cls(
        header=header, height=packed.height, width=packed.width, fields=fields,
        is_bigendian=packed.is_bigendian, point_step=packed.point_step,
        row_step=packed.row_step, data=data, is_dense=packed.is_dense)


def from_pointcloud2(msg) -> PackedCloud:
    """The PackedCloud of a PointCloud2 message (rclpy or rosbags) with fields this module writes.

    The inverse of :func:`to_pointcloud2`; ``data`` is a copy, independent of the message."""
    fields = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    unknown = [name for name, _, datatype, _ in fields if datatype not in _NUMPY_OF_DATATYPE]
    if unknown or msg.is_bigendian:
        raise ValueError(f"cannot read PointCloud2 fields {unknown or 'big-endian'}: "
                         f"only little-endian {sorted(_NUMPY_OF_DATATYPE)} datatypes are supported")
    return PackedCloud(height=msg.height, width=msg.width, point_step=msg.point_step, row_step=msg.row_step,
                       fields=fields, data=np.frombuffer(bytes(msg.data), dtype=np.uint8),
                       is_dense=bool(msg.is_dense), is_bigendian=False)


def write_ply(path: str | os.PathLike, cloud, rgb: np.ndarray | None = None,
              labels: np.ndarray | None = None) -> int:
    """Write the finite points as a binary little-endian PLY; returns the number written.

    ``cloud`` is a :class:`PackedCloud` (its rgb/label fields are written when present), or an
    (..., 3) xyz array with optional matching uint8 ``rgb`` (..., 3) and ``labels`` (...).
    Colour goes to the standard ``red green blue`` uchar properties, labels to ``label``.
    """
    if isinstance(cloud, PackedCloud):
        if rgb is not None or labels is not None:
            raise ValueError("rgb/labels come from the PackedCloud; do not pass them separately")
        pts = cloud.points().reshape(-1)
        xyz = np.stack((pts["x"], pts["y"], pts["z"]), axis=-1)
        names = pts.dtype.names
        if "rgb" in names:
            bits = pts["rgb"]
            rgb = np.stack(((bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF),
                           axis=-1).astype(np.uint8)
        if "label" in names:
            labels = pts["label"]
    else:
        xyz = np.asarray(cloud, dtype=np.float32).reshape(-1, 3)
        if rgb is not None:
            rgb = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
        if labels is not None:
            labels = np.asarray(labels, dtype=np.uint8).reshape(-1)
    for name, extra in (("rgb", rgb), ("labels", labels)):
        if extra is not None and len(extra) != len(xyz):
            raise ValueError(f"{name} has {len(extra)} entries for {len(xyz)} points")

    keep = np.isfinite(xyz).all(axis=1)
    props = [("x", "<f4", "float"), ("y", "<f4", "float"), ("z", "<f4", "float")]
    if rgb is not None:
        props += [("red", "u1", "uchar"), ("green", "u1", "uchar"), ("blue", "u1", "uchar")]
    if labels is not None:
        props.append(("label", "u1", "uchar"))
    vertices = np.empty(int(keep.sum()), dtype=[(n, f) for n, f, _ in props])  # packed, no gaps
    for axis, name in enumerate("xyz"):
        vertices[name] = xyz[keep, axis]
    if rgb is not None:
        for channel, name in enumerate(("red", "green", "blue")):
            vertices[name] = rgb[keep, channel]
    if labels is not None:
        vertices["label"] = labels[keep]

    header = ["ply", "format binary_little_endian 1.0", "comment written by dpt_ros",
              f"element vertex {len(vertices)}"]
    header += [f"property {ply_type} {name}" for name, _, ply_type in props]
    header.append("end_header")
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(vertices.tobytes())
    return len(vertices)
