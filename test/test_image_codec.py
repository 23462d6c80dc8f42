"""image_codec: every encoding against hand-made pixels, compressed round trips, bad input."""
import array
import struct
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from dpt_ros.image_codec import (
    ImageDecodeError, array_to_image_fields, compressed_to_rgb, depth_image_to_metres,
    image_to_rgb, labels_image_to_array, mono16_to_mono8)

# A 2x3 RGB test pattern; every pixel differs in every channel so swaps show up.
RGB = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                [[10, 20, 30], [200, 100, 50], [1, 2, 3]]], dtype=np.uint8)


def image_msg(encoding, height, width, step, data, is_bigendian=0):
    return SimpleNamespace(encoding=encoding, height=height, width=width, step=step,
                           data=data, is_bigendian=is_bigendian)


def rows_with_padding(rows, pad):
    """Join per-row byte strings, appending ``pad`` junk bytes to each row."""
    return b"".join(row + b"\xee" * pad for row in rows)


def pixel_rows(per_pixel):
    """Bytes of each row of RGB, where ``per_pixel(r, g, b)`` gives one pixel's bytes."""
    return [b"".join(per_pixel(*map(int, px)) for px in row) for row in RGB]


@pytest.mark.parametrize("encoding, per_pixel", [
    ("rgb8", lambda r, g, b: bytes([r, g, b])),
    ("bgr8", lambda r, g, b: bytes([b, g, r])),
    ("8UC3", lambda r, g, b: bytes([b, g, r])),
    ("rgba8", lambda r, g, b: bytes([r, g, b, 77])),
    ("bgra8", lambda r, g, b: bytes([b, g, r, 77])),
])
@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings(encoding, per_pixel, pad):
    rows = pixel_rows(per_pixel)
    step = len(rows[0]) + pad
    msg = image_msg(encoding, 2, 3, step, rows_with_padding(rows, pad))
    out = image_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out, RGB)


def test_rgb8_is_zero_copy_view_of_message():
    data = np.frombuffer(RGB.tobytes(), dtype=np.uint8).copy()  # rosbags-style numpy data
    out = image_to_rgb(image_msg("rgb8", 2, 3, 9, data))
    assert np.shares_memory(out, data)
    padded = array.array("B", rows_with_padding(pixel_rows(lambda r, g, b: bytes([r, g, b])), 3))
    out = image_to_rgb(image_msg("rgb8", 2, 3, 12, padded))  # rclpy-style array.array data
    np.testing.assert_array_equal(out, RGB)
    assert out.strides[0] == 12


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8(encoding):
    grey = np.array([[0, 17, 255], [128, 1, 99]], dtype=np.uint8)
    msg = image_msg(encoding, 2, 3, 4, rows_with_padding([bytes(r) for r in grey], 1))
    np.testing.assert_array_equal(image_to_rgb(msg), np.repeat(grey[:, :, None], 3, axis=2))


@pytest.mark.parametrize("bigendian", [0, 1])
def test_mono16_endianness_and_8bit_rule(bigendian):
    values = [[0, 256, 65535], [128, 129, 1000]]
    fmt = ">H" if bigendian else "<H"
    rows = [b"".join(struct.pack(fmt, v) for v in row) for row in values]
    msg = image_msg("mono16", 2, 3, 8, rows_with_padding(rows, 2), is_bigendian=bigendian)
    # round(v / 257): 0->0, 256->1 (0.996), 65535->255, 128->0 (0.498), 129->1 (0.502),
    # 1000->4 (3.89)
    expected = np.array([[0, 1, 255], [0, 1, 4]], dtype=np.uint8)
    np.testing.assert_array_equal(image_to_rgb(msg), np.repeat(expected[:, :, None], 3, axis=2))


def test_mono16_to_mono8_matches_float_rounding_everywhere():
    v = np.arange(65536, dtype=np.uint16)
    expected = np.round(v * 255.0 / 65535.0).astype(np.uint8)
    np.testing.assert_array_equal(mono16_to_mono8(v), expected)


def bt601_limited(y, u, v):
    """Hand formula for studio-range BT.601 YUV -> RGB (what cv_bridge/cv2 use for 4:2:2)."""
    c, d, e = y - 16, u - 128, v - 128
    r = 1.164 * c + 1.596 * e
    g = 1.164 * c - 0.392 * d - 0.813 * e
    b = 1.164 * c + 2.017 * d
    return [int(np.clip(round(x), 0, 255)) for x in (r, g, b)]


# Two macropixels per row: (Y0, Y1, U, V).  Greys are exact; red/blue-ish check the chroma terms.
MACROPIXELS = [[(16, 235, 128, 128), (126, 81, 90, 240)],
               [(41, 145, 240, 110), (200, 60, 60, 200)]]


@pytest.mark.parametrize("encoding, order", [
    ("yuv422", "UYVY"), ("uyvy", "UYVY"), ("yuv422_yuy2", "YUYV"), ("yuyv", "YUYV")])
def test_yuv422(encoding, order):
    rows, expected = [], []
    for row in MACROPIXELS:
        raw, rgb_row = b"", []
        for y0, y1, u, v in row:
            raw += bytes([u, y0, v, y1]) if order == "UYVY" else bytes([y0, u, y1, v])
            rgb_row += [bt601_limited(y0, u, v), bt601_limited(y1, u, v)]
        rows.append(raw)
        expected.append(rgb_row)
    msg = image_msg(encoding, 2, 4, 8 + 4, rows_with_padding(rows, 4))
    out = image_to_rgb(msg).astype(int)
    expected = np.array(expected)
    assert out.shape == (2, 4, 3)
    # The first macropixel is pure black and white: exact.
    np.testing.assert_array_equal(out[0, :2], [[0, 0, 0], [255, 255, 255]])
    # cv2 uses fixed-point coefficients: allow 1 level of rounding difference.
    assert np.abs(out - expected).max() <= 1, (out, expected)


@pytest.mark.parametrize("fmt", ["png", "rgb8; png compressed bgr8", ""])
def test_png_round_trip_is_exact(fmt):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = SimpleNamespace(format=fmt, data=encoded.reshape(-1))
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)
    msg = SimpleNamespace(format=fmt, data=encoded.tobytes())  # rclpy-like bytes
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "bgr8; jpeg compressed bgr8"])
def test_jpeg_round_trip_is_close(fmt):
    # Smooth gradients in distinct channels survive JPEG well and catch a channel swap.
    yy, xx = np.mgrid[0:32, 0:48]
    rgb = np.stack([xx * 5, yy * 7, np.full_like(xx, 40)], axis=-1).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = compressed_to_rgb(SimpleNamespace(format=fmt, data=encoded.tobytes()))
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 2.0


def test_compressed_rgb_target_is_not_swapped():
    rgb = RGB.copy()
    # Stored with rgb8 target: the encoder saw RGB bytes as if they were BGR.
    ok, encoded = cv2.imencode(".png", rgb)
    msg = SimpleNamespace(format="rgb8; png compressed rgb8", data=encoded.tobytes())
    out = compressed_to_rgb(msg)
    np.testing.assert_array_equal(out, rgb)


def test_rosbags_and_rclpy_messages_decode():
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore(Stores.ROS2_JAZZY)
    Image = ts.types["sensor_msgs/msg/Image"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    bgr = RGB[:, :, ::-1].tobytes()
    msg = Image(header=Header(stamp=Time(sec=0, nanosec=0), frame_id="cam"), height=2, width=3,
                encoding="bgr8", is_bigendian=0, step=9,
                data=np.frombuffer(bgr, dtype=np.uint8).copy())
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)

    from sensor_msgs.msg import Image as RclpyImage
    msg = RclpyImage(height=2, width=3, encoding="bgr8", is_bigendian=0, step=9, data=bgr)
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


# ---- bad input -------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------- Bayer
BAYER_PATTERNS = ("rggb", "bggr", "gbrg", "grbg")


def bayer_mosaic(rgb, pattern):
    """The mosaic a sensor with colour filter ``pattern`` (the top-left 2x2 cell, row by row) would
    record of the scene ``rgb``: each pixel keeps only its filter's channel."""
    channel = {"r": 0, "g": 1, "b": 2}
    mosaic = np.empty(rgb.shape[:2], rgb.dtype)
    for (dy, dx), colour in zip(((0, 0), (0, 1), (1, 0), (1, 1)), pattern):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel[colour]]
    return mosaic


def bayer_msg(mosaic, pattern, pad=0, bigendian=0):
    bits = 8 * mosaic.dtype.itemsize
    samples = mosaic.astype(mosaic.dtype.newbyteorder(">" if bigendian else "<"))
    rows = [row.tobytes() for row in samples]
    return image_msg(f"bayer_{pattern}{bits}", mosaic.shape[0], mosaic.shape[1], len(rows[0]) + pad,
                     rows_with_padding(rows, pad), is_bigendian=bigendian)


def smooth_scene(height=18, width=24):
    """Each channel a different linear ramp: bilinear demosaicing reproduces it exactly away from
    the border, where it lacks the neighbours on one side."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([40 + 5 * x, 60 + 4 * y, 200 - 3 * x - 2 * y], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("pad", [0, 3])
def test_bayer8_demosaics_a_smooth_scene(pattern, pad):
    scene = smooth_scene()
    out = image_to_rgb(bayer_msg(bayer_mosaic(scene, pattern), pattern, pad=pad))
    assert out.dtype == np.uint8 and out.shape == scene.shape
    np.testing.assert_array_equal(out[1:-1, 1:-1], scene[1:-1, 1:-1])
    assert np.abs(out.astype(int) - scene).max() <= 10  # the border pixels extrapolate a little


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_bayer_channel_order_on_constant_colour_is_exact(pattern):
    """R, G and B differ, so a pattern decoded as another one (or channels swapped) shows."""
    scene = np.empty((5, 7, 3), np.uint8)
    scene[...] = (200, 50, 10)
    np.testing.assert_array_equal(image_to_rgb(bayer_msg(bayer_mosaic(scene, pattern), pattern)), scene)
    others = [other for other in BAYER_PATTERNS if other != pattern]
    for other in others:  # the same bytes under another pattern name give other colours
        assert not np.array_equal(image_to_rgb(bayer_msg(bayer_mosaic(scene, pattern), other)), scene)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("bigendian", [0, 1])
def test_bayer16_demosaics_at_16_bits_then_the_mono16_rule(pattern, bigendian):
    scene = smooth_scene()
    full_range = bayer_mosaic(scene.astype(np.uint16) * 257, pattern)  # v * 257 -> v by the mono16 rule
    out = image_to_rgb(bayer_msg(full_range, pattern, pad=2, bigendian=bigendian))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[1:-1, 1:-1], scene[1:-1, 1:-1])
    # 12-bit samples in 16-bit words (many industrial cameras) keep the fixed 16-bit rule
    twelve_bit = np.full((4, 6, 3), (4095, 2048, 16), np.uint16)
    out = image_to_rgb(bayer_msg(bayer_mosaic(twelve_bit, pattern), pattern, bigendian=bigendian))
    np.testing.assert_array_equal(out, mono16_to_mono8(twelve_bit))


def test_bayer_too_small_to_demosaic_raises():
    with pytest.raises(ImageDecodeError, match=r"at least 3x3 pixels to demosaic \(got 4x2\)"):
        image_to_rgb(image_msg("bayer_grbg8", 2, 4, 4, bytes(8)))


@pytest.mark.parametrize("msg, message", [
    (image_msg("32SC4", 2, 3, 9, bytes(18)),
     r"unsupported image encoding '32SC4'; supported: rgb8, bgr8"),
    (image_msg("rgb8", 2, 3, 9, bytes(17)), r"17 bytes, shorter than step\*height = 9\*2 = 18"),
    (image_msg("rgb8", 2, 3, 8, bytes(18)),
     r"step 8 is smaller than width\*channels\*bytes = 3\*3\*1 = 9"),
    (image_msg("mono16", 2, 3, 5, bytes(12)), r"step 5 is smaller than .* = 3\*1\*2 = 6"),
    (image_msg("rgb8", 0, 3, 9, b""), r"zero size \(3x0\)"),
    (image_msg("mono8", 2, 0, 0, b""), r"zero size \(0x2\)"),
    (image_msg("yuv422", 2, 3, 6, bytes(12)), r"width must be even \(got 3\)"),
    (image_msg("yuv422_yuy2", 1, 5, 10, bytes(10)), r"width must be even \(got 5\)"),
])
def test_bad_raw_images_raise(msg, message):
    with pytest.raises(ImageDecodeError, match=message):
        image_to_rgb(msg)


def test_unknown_encoding_lists_all_supported():
    with pytest.raises(ImageDecodeError, match="unsupported image encoding 'nv21'") as info:
        image_to_rgb(image_msg("nv21", 2, 2, 2, bytes(6)))
    for name in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC1", "8UC3",
                 "yuv422", "yuv422_yuy2", "uyvy", "yuyv", "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8",
                 "bayer_grbg8", "bayer_rggb16", "bayer_bggr16", "bayer_gbrg16", "bayer_grbg16"):
        assert name in str(info.value)


def test_depth_encoding_is_not_a_colour_image():
    with pytest.raises(ImageDecodeError, match="unsupported image encoding '32FC1'"):
        image_to_rgb(image_msg("32FC1", 1, 1, 4, bytes(4)))


@pytest.mark.parametrize("fmt, data, message", [
    ("jpeg", b"\xff\xd8\xff\xe0 definitely not a jpeg", r"corrupt JPEG data \(26 bytes\)"),
    ("png", b"\x89PNG\r\n\x1a\n truncated", r"corrupt PNG data"),
    ("png", b"", r"has no data"),
    ("tiff", b"II*\x00", r"unsupported CompressedImage format 'tiff'; supported: jpeg, png"),
    ("16UC1; compressedDepth png", b"\x00" * 20, r"compressedDepth stream"),
    ("", b"GIF89a....", r"neither JPEG nor PNG"),
])
def test_bad_compressed_images_raise(fmt, data, message):
    with pytest.raises(ImageDecodeError, match=message):
        compressed_to_rgb(SimpleNamespace(format=fmt, data=data))


@pytest.mark.parametrize("ext, fmt", [(".jpg", "jpeg"), (".png", "png")])
def test_truncated_compressed_image_raises(ext, fmt):
    yy, xx = np.mgrid[0:64, 0:64]
    image = np.stack([xx * 3, yy * 3, xx + yy], axis=-1).astype(np.uint8)
    ok, encoded = cv2.imencode(ext, image)
    half = encoded.reshape(-1)[: encoded.size // 2]
    expected = f"corrupt {fmt.upper()} data \\({half.size} bytes\\)"
    with pytest.raises(ImageDecodeError, match=expected):
        compressed_to_rgb(SimpleNamespace(format=fmt, data=half))


# ---- depth and labels ------------------------------------------------------------------------

@pytest.mark.parametrize("bigendian", [0, 1])
def test_depth_32fc1_metres_with_invalid_values(bigendian):
    values = [[1.5, 0.0, float("nan")], [float("inf"), -2.0, 0.25]]
    fmt = ">f" if bigendian else "<f"
    rows = [b"".join(struct.pack(fmt, v) for v in row) for row in values]
    msg = image_msg("32FC1", 2, 3, 16, rows_with_padding(rows, 4), is_bigendian=bigendian)
    depth = depth_image_to_metres(msg)
    assert depth.dtype == np.float32 and depth.shape == (2, 3)
    expected = np.array([[1.5, np.nan, np.nan], [np.nan, np.nan, 0.25]], dtype=np.float32)
    np.testing.assert_array_equal(depth, expected)  # NaNs compare equal position-wise


@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
@pytest.mark.parametrize("bigendian", [0, 1])
def test_depth_16bit_millimetres(encoding, bigendian):
    values = [[1500, 0, 65535], [1, 250, 4000]]
    fmt = ">H" if bigendian else "<H"
    rows = [b"".join(struct.pack(fmt, v) for v in row) for row in values]
    msg = image_msg(encoding, 2, 3, 6, b"".join(rows), is_bigendian=bigendian)
    expected = np.array([[1.5, np.nan, 65.535], [0.001, 0.25, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(depth_image_to_metres(msg), expected, rtol=1e-7)


def test_depth_decoded_on_a_strided_grid():
    values = np.arange(1, 36, dtype="<u2").reshape(5, 7) * 100  # millimetres
    msg = image_msg("16UC1", 5, 7, 14, values.tobytes())
    grid = depth_image_to_metres(msg, stride=3)
    # Rows 0, 3 and columns 0, 3, 6 of the full image, in metres.
    np.testing.assert_allclose(grid, values[::3, ::3] / 1000.0, rtol=1e-7)
    np.testing.assert_array_equal(grid, depth_image_to_metres(msg)[::3, ::3])
    with pytest.raises(ValueError, match="positive integer"):
        depth_image_to_metres(msg, stride=0)


def test_depth_rejects_colour_encoding():
    with pytest.raises(ImageDecodeError, match="supported: 32FC1, 16UC1, mono16"):
        depth_image_to_metres(image_msg("rgb8", 1, 1, 3, bytes(3)))


def test_labels_8bit_view_and_16bit():
    labels = np.array([[0, 149, 255], [7, 12, 3]], dtype=np.uint8)
    data = rows_with_padding([bytes(r) for r in labels], 2)
    for enc in ("mono8", "8UC1"):
        out = labels_image_to_array(image_msg(enc, 2, 3, 5, data))
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, labels)
    rows = [b"".join(struct.pack(">H", v) for v in row) for row in [[0, 149, 300], [65535, 1, 2]]]
    out = labels_image_to_array(image_msg("16UC1", 2, 3, 6, b"".join(rows), is_bigendian=1))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, [[0, 149, 300], [65535, 1, 2]])


# ---- building output images ------------------------------------------------------------------

def test_array_to_image_fields_layouts():
    depth = np.array([[1.0, np.nan], [2.5, 0.125]], dtype=np.float64)  # cast to float32
    f = array_to_image_fields(depth, "32FC1")
    header = (f["height"], f["width"], f["encoding"], f["is_bigendian"], f["step"])
    assert header == (2, 2, "32FC1", 0, 8)
    assert isinstance(f["data"], array.array) and f["data"].typecode == "B"
    assert bytes(f["data"]) == struct.pack("<4f", 1.0, float("nan"), 2.5, 0.125)

    f = array_to_image_fields(np.array([[1, 513]], dtype=np.int64), "16UC1", as_numpy=True)
    assert f["step"] == 4 and f["data"].dtype == np.uint8
    assert f["data"].tobytes() == b"\x01\x00\x01\x02"

    f = array_to_image_fields(RGB, "rgb8")
    assert f["step"] == 9 and bytes(f["data"]) == RGB.tobytes()

    f = array_to_image_fields(np.array([[3, 4, 5]], dtype=np.uint8), "mono8", as_numpy=True)
    assert f["step"] == 3 and f["data"].tolist() == [3, 4, 5]


def test_array_to_image_fields_data_is_a_copy():
    labels = np.zeros((2, 2), dtype=np.uint8)
    f = array_to_image_fields(labels, "mono8", as_numpy=True)
    labels[0, 0] = 9
    assert f["data"][0] == 0


def test_output_image_round_trips_through_decoders():
    depth = np.array([[0.5, 1.25, 3.0]], dtype=np.float32)
    f = array_to_image_fields(depth, "32FC1")
    np.testing.assert_array_equal(depth_image_to_metres(SimpleNamespace(**f)), depth)
    f = array_to_image_fields(RGB, "rgb8", as_numpy=True)
    np.testing.assert_array_equal(image_to_rgb(SimpleNamespace(**f)), RGB)


def test_output_fields_build_rclpy_and_rosbags_images():
    from sensor_msgs.msg import Image as RclpyImage
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore(Stores.ROS2_JAZZY)
    Image, Header, Time = (ts.types[n] for n in (
        "sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))
    depth = np.array([[0.5, 2.0]], dtype=np.float32)
    msg = RclpyImage(**array_to_image_fields(depth, "32FC1"))
    np.testing.assert_array_equal(depth_image_to_metres(msg), depth)
    header = Header(stamp=Time(sec=1, nanosec=2), frame_id="cam")
    msg = Image(header=header, **array_to_image_fields(depth, "32FC1", as_numpy=True))
    raw = ts.serialize_cdr(msg, Image.__msgtype__)
    back = ts.deserialize_cdr(raw, Image.__msgtype__)
    np.testing.assert_array_equal(depth_image_to_metres(back), depth)


@pytest.mark.parametrize("array_in, encoding, message", [
    (np.zeros((2, 2)), "bgr8",
     r"unsupported output encoding 'bgr8'; supported: 32FC1, mono8, rgb8, 16UC1"),
    (np.zeros((2, 2)), "rgb8", r"rgb8 needs an array of shape \(H, W, 3\), got \(2, 2\)"),
    (np.zeros((2, 2, 3)), "mono8", r"mono8 needs an array of shape \(H, W\)"),
    (np.zeros((0, 2)), "32FC1", r"zero size"),
])
def test_array_to_image_fields_rejects_bad_input(array_in, encoding, message):
    with pytest.raises(ValueError, match=message):
        array_to_image_fields(array_in, encoding)


def test_codec_modules_import_no_ros():
    """The ROS-free core must stay importable without rclpy or message packages."""
    from support.imports import ROS_PACKAGES, packages_imported_by

    assert packages_imported_by(("dpt_ros.image_codec", "dpt_ros.geometry", "dpt_ros.cloud", "dpt_ros.labels",
                                 "dpt_ros.colorize"), ROS_PACKAGES + ("rosbags",)) == []


# ------------------------------------------------------------------------------------------------
# Size limits before decoding, and decoder errors as rejections (issue 10, finding 10)
# ------------------------------------------------------------------------------------------------

def _png_claiming(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose IHDR (with a correct CRC) claims another size."""
    import struct
    import zlib

    data = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _jpeg_claiming(width: int, height: int, progressive: bool = False) -> bytes:
    """A small JPEG whose start-of-frame segment claims another size (641 bytes can claim 10000x10000)."""
    import struct

    flags = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else []
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8), flags)[1].tobytes())
    sof = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("data, size", [
    (cv2.imencode(".png", np.zeros((37, 53, 3), np.uint8))[1].tobytes(), (53, 37)),
    (cv2.imencode(".jpg", np.zeros((37, 53, 3), np.uint8))[1].tobytes(), (53, 37)),
    (_jpeg_claiming(10000, 7000, progressive=True), (10000, 7000)),
    (_png_claiming(60000, 60000), (60000, 60000)),
    (b"\xff\xd8\xff", None),            # cut short
    (b"GIF89a....", None),              # neither format
])
def test_compressed_image_size_is_read_from_the_header(data, size):
    from dpt_ros.image_codec import compressed_image_size

    assert compressed_image_size(data) == size


def test_a_jpeg_claiming_10000x10000_is_refused_before_decoding():
    from dpt_ros.image_codec import ImageTooLarge

    message = SimpleNamespace(format="jpeg", data=_jpeg_claiming(10000, 10000))
    assert len(message.data) < 1000
    with pytest.raises(ImageTooLarge, match="10000x10000 = 100000000 pixels, more than the 16777216 accepted"):
        compressed_to_rgb(message, max_pixels=4096 * 4096)


def test_an_opencv_assertion_on_a_huge_png_header_is_a_decode_error():
    """Before: cv2.error escaped the decoder, so the frame counted as failed with OpenCV's raw text."""
    message = SimpleNamespace(format="png", data=_png_claiming(60000, 60000))
    with pytest.raises(ImageDecodeError, match="corrupt PNG data .*OpenCV refused it"):
        compressed_to_rgb(message)  # no size limit given: OpenCV's own limit trips


def test_a_raw_image_over_the_limit_is_refused_from_its_declared_size():
    from dpt_ros.image_codec import ImageTooLarge

    message = SimpleNamespace(encoding="rgb8", width=8000, height=6000, step=24000, is_bigendian=0, data=b"")
    with pytest.raises(ImageTooLarge, match="8000x6000"):
        image_to_rgb(message, max_pixels=4096 * 4096)
