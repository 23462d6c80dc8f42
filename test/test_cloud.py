"""cloud: packed PointCloud2 bytes decode back to the hand-computed points, colours and labels."""
import struct

import numpy as np
import pytest
import torch

from dpt_ros.cloud import from_pointcloud2, pack_cloud, to_pointcloud2, write_ply
from dpt_ros.geometry import depth_to_xyz, intrinsics_from_projection

NAN = float("nan")


def decode(data, height, width, point_step, with_rgb, with_label):
    """Independent reader: the documented layout, written out by hand."""
    fields = [("x", "<f4", 0), ("y", "<f4", 4), ("z", "<f4", 8)]
    off = 12
    if with_rgb:
        fields.append(("rgb", "<u4", off))
        off += 4
    if with_label:
        fields.append(("label", "u1", off))
    dtype = np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                      "offsets": [f[2] for f in fields], "itemsize": point_step})
    pts = np.frombuffer(bytes(data), dtype=dtype).reshape(height, width)
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], axis=-1)
    rgb = None
    if with_rgb:
        bits = pts["rgb"]
        rgb = np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=-1)
        rgb = rgb.astype(np.uint8)
        assert (bits >> 24 == 0).all()
    return xyz, rgb, (pts["label"] if with_label else None)


def scene():
    """A 4x6 depth image with invalid pixels, intrinsics from a resized 8x12 calibration."""
    depth = np.array([
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        [1.5, NAN, 0.0, 2.5, 9.0, 2.0],
        [0.5, 0.75, 1.25, np.inf, 3.5, 4.5],
        [2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
    ], dtype=np.float32)
    # Calibrated at 8x12 with fx=10, fy=12, cx=5.5, cy=3.5; the depth is half that size.
    P = [10.0, 0, 5.5, 0, 0, 12.0, 3.5, 0, 0, 0, 1, 0]
    fx, fy, cx, cy = intrinsics_from_projection(P, (8, 12), (4, 6))
    assert (fx, fy, cx, cy) == (5.0, 6.0, 2.75, 1.75)
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    labels = rng.integers(0, 150, (4, 6), dtype=np.uint8)
    labels[0, 0] = 255
    return depth, (fx, fy, cx, cy), rgb, labels


def hand_points(depth, fx, fy, cx, cy, max_range):
    out = np.full(depth.shape + (3,), np.nan)
    for v in range(depth.shape[0]):
        for u in range(depth.shape[1]):
            z = float(depth[v, u])
            if math_ok(z) and z <= max_range:
                out[v, u] = [(u - cx) * z / fx, (v - cy) * z / fy, z]
    return out


def math_ok(z):
    return np.isfinite(z) and z > 0


def test_cloud_points_match_hand_back_projection():
    depth, K, rgb, labels = scene()
    xyz = depth_to_xyz(depth, *K, max_range=8.0)
    packed = pack_cloud(xyz, rgb, labels)
    assert (packed.height, packed.width) == (4, 6)
    assert packed.point_step == 20 and packed.row_step == 120
    assert packed.fields == [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1),
                             ("rgb", 12, 7, 1), ("label", 16, 2, 1)]
    assert packed.is_dense is False and packed.is_bigendian is False
    assert packed.data.dtype == np.uint8 and packed.data.ndim == 1
    assert packed.data.flags.c_contiguous and packed.data.size == 4 * 120

    got_xyz, got_rgb, got_labels = decode(packed.data, 4, 6, 20, True, True)
    expected = hand_points(depth, *K, max_range=8.0)
    np.testing.assert_allclose(got_xyz, expected, rtol=1e-6, equal_nan=True)
    # Spot checks written out: pixel (u=4, v=0), z=5 -> X=(4-2.75)*5/5, Y=(0-1.75)*5/6.
    np.testing.assert_allclose(got_xyz[0, 4], [1.25, -1.4583333, 5.0], rtol=1e-6)
    # NaN, zero, inf and over-range (9.0 > 8.0) pixels are NaN in all three coordinates.
    for v, u in [(1, 1), (1, 2), (2, 3), (1, 4)]:
        assert np.isnan(got_xyz[v, u]).all()
    np.testing.assert_array_equal(got_rgb, rgb)
    np.testing.assert_array_equal(got_labels, labels)


def test_packed_rgb_bits_follow_pcl_convention():
    xyz = np.zeros((1, 1, 3), np.float32)
    packed = pack_cloud(xyz, rgb=np.array([[[0x12, 0x34, 0x56]]], np.uint8))
    (bits,) = struct.unpack_from("<I", packed.data.tobytes(), 12)
    assert bits == 0x00123456
    assert packed.points()["rgb"][0, 0] == 0x00123456


def test_layouts_without_optional_fields():
    xyz = np.ones((2, 3, 3), np.float32)
    only = pack_cloud(xyz)
    assert only.point_step == 12 and [f[0] for f in only.fields] == ["x", "y", "z"]
    np.testing.assert_array_equal(decode(only.data, 2, 3, 12, False, False)[0], xyz)
    lab = pack_cloud(xyz, labels=np.full((2, 3), 7, np.int64))
    assert lab.point_step == 16 and lab.fields[-1] == ("label", 12, 2, 1)
    assert (decode(lab.data, 2, 3, 16, False, True)[2] == 7).all()


def test_strided_cloud_keeps_every_nth_pixel():
    depth, K, rgb, labels = scene()
    xyz = depth_to_xyz(depth, *K)
    packed = pack_cloud(xyz, rgb, labels, stride=4)
    assert (packed.height, packed.width, packed.row_step) == (1, 2, 40)
    got_xyz, got_rgb, got_labels = decode(packed.data, 1, 2, 20, True, True)
    # Kept pixels are (v=0, u=0) and (v=0, u=4), exactly as at full resolution.
    expected = [[(0 - 2.75) * 1 / 5, (0 - 1.75) * 1 / 6, 1.0],
                [(4 - 2.75) * 5 / 5, (0 - 1.75) * 5 / 6, 5.0]]
    np.testing.assert_allclose(got_xyz[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(got_rgb[0], rgb[0, ::4])
    np.testing.assert_array_equal(got_labels[0], labels[0, ::4])
    packed = pack_cloud(xyz, stride=3)
    assert (packed.height, packed.width) == (2, 2)
    np.testing.assert_array_equal(decode(packed.data, 2, 2, 12, False, False)[0],
                                  xyz[::3, ::3])


@pytest.mark.parametrize("kwargs, message", [
    (dict(xyz=np.zeros((2, 2))), r"xyz must be \(H, W, 3\)"),
    (dict(xyz=np.zeros((2, 2, 3)), rgb=np.zeros((2, 2, 3), np.float32)), "rgb must be uint8"),
    (dict(xyz=np.zeros((2, 2, 3)), labels=np.zeros((2, 3), np.uint8)), r"labels must be \(2, 2\)"),
    (dict(xyz=np.zeros((2, 2, 3)), labels=np.full((2, 2), 300)), "fit in uint8"),
    (dict(xyz=np.zeros((2, 2, 3)), stride=0), "positive integer"),
])
def test_pack_cloud_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pack_cloud(**kwargs)


def test_to_pointcloud2_rosbags_round_trip_through_cdr():
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore(Stores.ROS2_JAZZY)
    PointCloud2 = ts.types["sensor_msgs/msg/PointCloud2"]
    PointField = ts.types["sensor_msgs/msg/PointField"]
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    assert (PointField.FLOAT32, PointField.UINT8, PointField.UINT32) == (7, 2, 6)
    depth, K, rgb, labels = scene()
    packed = pack_cloud(depth_to_xyz(depth, *K), rgb, labels)
    header = Header(stamp=Time(sec=5, nanosec=6), frame_id="camera_optical_frame")
    msg = to_pointcloud2(packed, header, PointCloud2, PointField)
    msgtype = PointCloud2.__msgtype__
    back = ts.deserialize_cdr(ts.serialize_cdr(msg, msgtype), msgtype)
    assert back.header.frame_id == "camera_optical_frame" and back.header.stamp.sec == 5
    assert (back.height, back.width, back.point_step, back.row_step) == (4, 6, 20, 120)
    assert [(f.name, f.offset, f.datatype, f.count) for f in back.fields] == packed.fields
    assert back.is_dense is False and back.is_bigendian is False
    got_xyz, got_rgb, got_labels = decode(back.data, 4, 6, 20, True, True)
    np.testing.assert_array_equal(got_xyz, depth_to_xyz(depth, *K))
    read = from_pointcloud2(back)
    assert (read.height, read.width, read.point_step, read.row_step, read.fields) == (4, 6, 20, 120, packed.fields)
    np.testing.assert_array_equal(read.data, packed.data)
    np.testing.assert_array_equal(got_rgb, rgb)
    np.testing.assert_array_equal(got_labels, labels)


def test_to_pointcloud2_rclpy_messages():
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header
    depth, K, rgb, labels = scene()
    packed = pack_cloud(depth_to_xyz(depth, *K), rgb, labels)
    msg = to_pointcloud2(packed, Header(frame_id="cam"), PointCloud2, PointField)
    assert isinstance(msg, PointCloud2)
    assert msg.header.frame_id == "cam" and (msg.height, msg.width) == (4, 6)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == packed.fields
    assert msg.fields[3].datatype == PointField.FLOAT32
    assert msg.fields[4].datatype == PointField.UINT8
    assert bytes(msg.data) == packed.data.tobytes()
    got_xyz, got_rgb, got_labels = decode(msg.data, 4, 6, 20, True, True)
    np.testing.assert_array_equal(got_rgb, rgb)
    np.testing.assert_array_equal(got_labels, labels)
    read = from_pointcloud2(msg)  # byte-exact (NaN points compare unequal as values)
    assert read.fields == packed.fields and read.data.tobytes() == packed.data.tobytes()
    assert read.points().shape == (4, 6)


def test_from_pointcloud2_refuses_fields_it_cannot_read():
    from sensor_msgs.msg import PointCloud2, PointField
    msg = PointCloud2(height=1, width=1, point_step=8, row_step=8, data=bytes(8),
                      fields=[PointField(name="intensity", offset=0, datatype=9, count=1)])  # no such datatype
    with pytest.raises(ValueError, match="intensity"):
        from_pointcloud2(msg)
    msg = PointCloud2(height=1, width=1, point_step=8, row_step=8, data=bytes(8), is_bigendian=True,
                      fields=[PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1)])
    with pytest.raises(ValueError, match="big-endian"):
        from_pointcloud2(msg)


def test_from_pointcloud2_reads_a_lidar_driver_layout():
    """A Velodyne/Ouster-like point: x y z float32, padding, intensity float32, ring uint16,
    time float64 - datatypes this module never writes but a lidar driver does."""
    from sensor_msgs.msg import PointCloud2, PointField
    point = np.dtype({"names": ["x", "y", "z", "intensity", "ring", "time"],
                      "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", "<f8"],
                      "offsets": [0, 4, 8, 16, 20, 24], "itemsize": 32})
    points = np.zeros(3, dtype=point)
    points["x"], points["y"], points["z"] = [1.5, -2.0, NAN], [0.25, 3.0, 1.0], [-0.5, 0.0, 2.0]
    points["intensity"], points["ring"], points["time"] = [7.0, 8.0, 9.0], [0, 15, 31], [1e-6, 2e-6, 3e-6]
    fields = [PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
              PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
              PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
              PointField(name="intensity", offset=16, datatype=PointField.FLOAT32, count=1),
              PointField(name="ring", offset=20, datatype=PointField.UINT16, count=1),
              PointField(name="time", offset=24, datatype=PointField.FLOAT64, count=1)]
    msg = PointCloud2(height=1, width=3, point_step=32, row_step=96, fields=fields, data=points.tobytes(),
                      is_dense=False)
    read = from_pointcloud2(msg).points()
    assert read.shape == (1, 3)
    np.testing.assert_array_equal(read["y"][0], [0.25, 3.0, 1.0])
    np.testing.assert_array_equal(read["ring"][0], [0, 15, 31])
    np.testing.assert_array_equal(read["time"][0], [1e-6, 2e-6, 3e-6])
    assert np.isnan(read["x"][0, 2]) and read["x"][0, 0] == 1.5


def read_ply(path):
    with open(path, "rb") as fh:
        blob = fh.read()
    head, body = blob.split(b"end_header\n", 1)
    lines = head.decode("ascii").splitlines()
    assert lines[0] == "ply" and lines[1] == "format binary_little_endian 1.0"
    count = int(next(line for line in lines if line.startswith("element vertex")).split()[-1])
    types = {"float": "<f4", "uchar": "u1"}
    props = [line.split()[1:] for line in lines if line.startswith("property")]
    dtype = np.dtype([(name, types[t]) for t, name in props])
    assert len(body) == count * dtype.itemsize
    return np.frombuffer(body, dtype=dtype)


def test_write_ply_keeps_only_finite_points(tmp_path):
    depth, K, rgb, labels = scene()
    xyz = depth_to_xyz(depth, *K)
    n = write_ply(tmp_path / "a.ply", pack_cloud(xyz, rgb, labels))
    valid = np.isfinite(xyz).all(axis=-1)
    assert n == valid.sum() == 21
    vert = read_ply(tmp_path / "a.ply")
    assert vert.dtype.names == ("x", "y", "z", "red", "green", "blue", "label")
    np.testing.assert_array_equal(np.stack([vert["x"], vert["y"], vert["z"]], -1), xyz[valid])
    colours = np.stack([vert["red"], vert["green"], vert["blue"]], -1)
    np.testing.assert_array_equal(colours, rgb[valid])
    np.testing.assert_array_equal(vert["label"], labels[valid])

    n = write_ply(tmp_path / "b.ply", xyz, rgb=rgb)
    vert = read_ply(tmp_path / "b.ply")
    assert n == 21 and vert.dtype.names == ("x", "y", "z", "red", "green", "blue")
    np.testing.assert_array_equal(vert["green"], rgb[valid][:, 1])
    with pytest.raises(ValueError, match="24 entries for 3 points"):
        write_ply(tmp_path / "c.ply", np.zeros((3, 3)), rgb=rgb)


def cloud_inputs(height=48, width=64, seed=0):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.3, 10.0, (height, width)).astype(np.float32)
    depth[::7, ::5] = np.nan
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    labels = rng.integers(0, 150, (height, width), dtype=np.uint8)
    return depth_to_xyz(depth, 52.5, 52.5, 31.5, 23.5), rgb, labels


@pytest.mark.parametrize("stride", [1, 3])
def test_tensors_pack_to_the_same_bytes_as_arrays(stride):
    xyz, rgb, labels = cloud_inputs()
    from_arrays = pack_cloud(xyz, rgb, labels, stride=stride)
    from_tensors = pack_cloud(torch.from_numpy(xyz), torch.from_numpy(rgb), torch.from_numpy(labels), stride=stride)
    assert bytes(from_tensors.data) == bytes(from_arrays.data)
    assert from_tensors.fields == from_arrays.fields and from_tensors.width == from_arrays.width


def test_read_only_and_flipped_arrays_are_packed():
    xyz, rgb, labels = cloud_inputs()
    expected = pack_cloud(xyz[::-1].copy(), rgb[:, ::-1].copy(), labels)
    rgb_view = rgb[:, ::-1]
    labels.flags.writeable = False
    assert bytes(pack_cloud(xyz[::-1], rgb_view, labels).data) == bytes(expected.data)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_points_on_the_gpu_pack_to_the_same_bytes():
    xyz, rgb, labels = cloud_inputs()
    on_gpu = pack_cloud(*(torch.from_numpy(a).cuda() for a in (xyz, rgb, labels)), stride=2)
    assert bytes(on_gpu.data) == bytes(pack_cloud(xyz, rgb, labels, stride=2).data)


def test_to_pointcloud2_rclpy_uses_current_data_even_if_replaced():
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header
    packed = pack_cloud(np.ones((2, 2, 3), np.float32))
    packed.data = np.full_like(packed.data, 0x41)  # same size, different memory
    msg = to_pointcloud2(packed, Header(), PointCloud2, PointField)
    assert bytes(msg.data) == b"A" * 48
