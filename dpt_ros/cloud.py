"""xyz (+ rgb, + label) arrays -> PointCloud2 bytes, and a PLY writer for the same points.

Point layout (little-endian), matching what PCL and RViz expect:

    offset 0  x      FLOAT32
    offset 4  y      FLOAT32
    offset 8  z      FLOAT32
    offset 12 rgb    FLOAT32 field holding the uint32 bits 0x00RRGGBB (PCL's packed colour)
    next      label  UINT8 (ADE20K class index, 255 = unknown)
    point_step is rounded up to a multiple of 4 so every float stays 4-byte aligned.

Packing writes whole (H, W, k) blocks through views of one byte buffer: no per-point Python; for
points on a GPU the block is filled there and copied to the host once.  Message classes are
passed in, so this module never imports ROS.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from dpt_ros.geometry import decimate
from dpt_ros.host_transfer import HostStaging

# sensor_msgs/PointField datatype codes.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = 1, 2, 3, 4, 5, 6, 7, 8

_ALIGN = 4
_UINT8 = (np.uint8, torch.uint8)  # the label/colour dtype, as numpy and torch spell it


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


# Every sensor_msgs/PointField datatype, so clouds of other drivers read too (a lidar's ring is
# UINT16, a Livox timestamp FLOAT64).
_NUMPY_OF_DATATYPE = {INT8: "i1", UINT8: "u1", INT16: "<i2", UINT16: "<u2", INT32: "<i4", UINT32: "<u4",
                      FLOAT32: "<f4", FLOAT64: "<f8"}


def _dtype_for(fields, point_step: int) -> np.dtype:
    names, formats, offsets = [], [], []
    for name, offset, datatype, count in fields:
        names.append(name)
        # The rgb field is declared FLOAT32 but its bits are a packed uint32 colour.
        element = "<u4" if name == "rgb" else _NUMPY_OF_DATATYPE[datatype]
        formats.append(element if count <= 1 else (element, count))
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


def pack_cloud(xyz, rgb=None, labels=None, stride: int = 1, staging: HostStaging | None = None) -> PackedCloud:
    """Pack (H, W, 3) float32 points, optional (H, W, 3) uint8 RGB and (H, W) uint8 labels.

    Inputs are numpy arrays, or torch tensors on one device (a GPU: the points are interleaved
    there and only the finished cloud crosses to the host, in one copy).  Arrays are packed with
    numpy: single-threaded, it keeps a steadier speed on loaded cores than torch's CPU kernels
    (benchmarks/NOTES.md, `ablations.py --cloud-only`).  The cloud stays organized: with ``stride`` > 1 every stride-th row and
    column is kept (height = ceil(H / stride), width = ceil(W / stride)).  NaN points are kept as
    NaN, so ``is_dense`` is False.  ``staging``: the engine's reused page-locked buffers for the
    one download of a cloud built on a GPU (default: a plain copy).
    """
    on_torch = isinstance(xyz, torch.Tensor)
    if not on_torch:
        xyz, rgb, labels = (np.asarray(a) if a is not None else None for a in (xyz, rgb, labels))
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise ValueError(f"xyz must be (H, W, 3), got {tuple(xyz.shape)}")
    if rgb is not None:
        if tuple(rgb.shape) != tuple(xyz.shape) or rgb.dtype not in _UINT8:
            raise ValueError(f"rgb must be uint8 {tuple(xyz.shape)}, got {rgb.dtype} {tuple(rgb.shape)}")
    if labels is not None:
        if tuple(labels.shape) != tuple(xyz.shape[:2]):
            raise ValueError(f"labels must be {tuple(xyz.shape[:2])}, got {tuple(labels.shape)}")
        if labels.dtype not in _UINT8:
            if min(labels.shape) > 0 and (int(labels.min()) < 0 or int(labels.max()) > 255):
                raise ValueError("labels must fit in uint8 (0..149, 255 = unknown)")
            labels = labels.to(torch.uint8) if on_torch else labels.astype(np.uint8)

    xyz = decimate(xyz, stride)
    rgb = decimate(rgb, stride) if rgb is not None else None
    labels = decimate(labels, stride) if labels is not None else None
    height, width = xyz.shape[:2]

    fields, point_step = _layout(rgb is not None, labels is not None)
    # The points live in a zeroed bytearray (padding bytes are deterministic) that rclpy takes
    # without a further copy.  It is filled through two views of one (H, W, point_step) byte
    # block - bytes, and float32 per 4 bytes (point_step is a multiple of 4) - so whole (H, W, k)
    # blocks are copied at once.  For tensors the block is built on their device, then copied
    # to the bytearray in one transfer.
    buffer = bytearray(height * width * point_step)
    host = np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, point_step)
    if on_torch:
        block = torch.zeros((height, width, point_step), dtype=torch.uint8, device=xyz.device)
        _interleave(block, block.view(torch.float32), xyz.to(torch.float32),
                    rgb.flip(-1) if rgb is not None else None, labels)
        if buffer:
            if staging is not None:
                staging.copy_into(block, host)
            else:
                torch.from_numpy(host).copy_(block)
    else:
        _interleave(host, host.view("<f4"), xyz, rgb[:, :, ::-1] if rgb is not None else None, labels)
    return PackedCloud(
        height=height, width=width, point_step=point_step, row_step=width * point_step,
        fields=fields, data=host.reshape(-1), is_dense=False, is_bigendian=False, _buffer=buffer)


def _interleave(block, floats, xyz, bgr, labels) -> None:
    """Write the fields into ``block`` (H, W, point_step) bytes / ``floats`` (its float32 view):
    numpy arrays or torch tensors alike (the same slicing)."""
    floats[:, :, 0:3] = xyz
    offset = 12
    if bgr is not None:
        # 0x00RRGGBB little-endian is the byte sequence B, G, R, 0.
        block[:, :, offset:offset + 3] = bgr
        offset += 4
    if labels is not None:
        block[:, :, offset] = labels


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
    """The PackedCloud of a PointCloud2 message (rclpy or rosbags), little-endian, with fields of
    any PointField datatype (those this module writes, and other drivers' such as a lidar's
    UINT16 ring).

    The inverse of :func:`to_pointcloud2`; ``data`` is a copy, independent of the message."""
    fields = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    unknown = [name for name, _, datatype, _ in fields if datatype not in _NUMPY_OF_DATATYPE]
    if unknown or msg.is_bigendian:
        raise ValueError(f"cannot read PointCloud2 fields {unknown or 'big-endian'}: "
                         "only little-endian clouds with PointField datatypes 1..8 are supported")
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
