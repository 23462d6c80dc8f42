"""sensor_msgs/Image and CompressedImage <-> numpy, without ROS.

Messages are duck-typed: anything with the fields ``encoding, height, width, step, data,
is_bigendian`` (Image) or ``format, data`` (CompressedImage) works, so rclpy messages and the
``rosbags`` typestore dataclasses decode alike.  ``data`` may be ``bytes``, ``array.array('B')``
(what rclpy stores), a uint8 numpy array (what rosbags stores) or a list of ints.

Colour images come in every raw encoding of ``COLOR_ENCODINGS`` (Bayer mosaics included,
demosaiced bilinearly here so the node and the evaluator both take them).  Decoding is zero-copy
where the pixel layout allows it: rgb8 images and 8-bit / little-endian
16-bit label images come back as numpy views of the message buffer (honouring ``step``, so rows
may be padded).  Such a view aliases the message - copy it before modifying it - and is
read-only when ``data`` is ``bytes``.  Encodings that need a channel swap or colour conversion,
and depth (whose invalid values are rewritten), return new contiguous arrays.
"""
from __future__ import annotations

import array
from dataclasses import dataclass

import cv2
import numpy as np

from dpt_ros.geometry import decimate


class ImageDecodeError(ValueError):
    """An image message cannot be decoded; the message says why."""


@dataclass(frozen=True)
class _Layout:
    channels: int
    dtype: str  # numpy kind+size without byte order, e.g. "u1", "u2", "f4"


# Layout of every raw encoding this module understands (names as in sensor_msgs/image_encodings).
# ROS spells UYVY "yuv422" and YUYV "yuv422_yuy2"; Jazzy also accepts "uyvy" / "yuyv".
_LAYOUTS = {
    "rgb8": _Layout(3, "u1"),
    "bgr8": _Layout(3, "u1"),
    "rgba8": _Layout(4, "u1"),
    "bgra8": _Layout(4, "u1"),
    "mono8": _Layout(1, "u1"),
    "8UC1": _Layout(1, "u1"),
    "8UC3": _Layout(3, "u1"),
    "mono16": _Layout(1, "u2"),
    "16UC1": _Layout(1, "u2"),
    "32FC1": _Layout(1, "f4"),
    "yuv422": _Layout(2, "u1"),
    "uyvy": _Layout(2, "u1"),
    "yuv422_yuy2": _Layout(2, "u1"),
    "yuyv": _Layout(2, "u1"),
    # Bayer mosaics: one sample per pixel, the colour filter pattern of the top-left 2x2 cell in the name.
    "bayer_rggb8": _Layout(1, "u1"),
    "bayer_bggr8": _Layout(1, "u1"),
    "bayer_gbrg8": _Layout(1, "u1"),
    "bayer_grbg8": _Layout(1, "u1"),
    "bayer_rggb16": _Layout(1, "u2"),
    "bayer_bggr16": _Layout(1, "u2"),
    "bayer_gbrg16": _Layout(1, "u2"),
    "bayer_grbg16": _Layout(1, "u2"),
}

COLOR_ENCODINGS = (
    "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC1", "8UC3",
    "yuv422", "yuv422_yuy2", "uyvy", "yuyv",
    "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8",
    "bayer_rggb16", "bayer_bggr16", "bayer_gbrg16", "bayer_grbg16",
)
DEPTH_ENCODINGS = ("32FC1", "16UC1", "mono16")
LABEL_ENCODINGS = ("mono8", "8UC1", "16UC1", "mono16")
OUTPUT_ENCODINGS = ("32FC1", "mono8", "rgb8", "16UC1")

# Packed 4:2:2 layouts: cv2 decodes them with the BT.601 limited-range matrix, as cv_bridge does.
_YUV422_CODES = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
}

# Bayer demosaicing: bilinear, as cv_bridge and image_proc's debayer do by default.  OpenCV names a
# pattern by the second row's second and third pixels, so ROS's rggb (R at the top-left) is
# OpenCV's "BG"; each pair was checked against a mosaic made from a known image.
_BAYER_CODES = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}
# Bilinear demosaicing reads a pixel's 3x3 neighbourhood; OpenCV returns zeros for smaller images.
_BAYER_MIN_SIDE = 3

# Millimetres per metre for 16-bit depth images (REP 118).
_MM_PER_M = 1000.0


def _byte_buffer(data) -> np.ndarray:
    """The message data as a 1-D uint8 array, sharing memory with it when possible."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageDecodeError(f"image data must be uint8, got {data.dtype}")
        return data.reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    try:
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageDecodeError(f"image data is not a byte sequence: {exc}") from exc


def _pixel_view(msg, supported: tuple[str, ...]) -> tuple[np.ndarray, str]:
    """Validate ``msg`` and return an (H, W, C) view of its pixels plus the encoding.

    The view honours ``step`` (rows may be padded) and ``is_bigendian`` (multi-byte samples are
    read in the byte order the message declares).
    """
    encoding = str(msg.encoding)
    if encoding not in supported:
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(supported)}")
    layout = _LAYOUTS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"image has zero size ({width}x{height})")
    if encoding in _YUV422_CODES and width % 2:
        raise ImageDecodeError(
            f"{encoding} packs two pixels per macropixel, so the width must be even (got {width})")
    if encoding.startswith("bayer_") and min(height, width) < _BAYER_MIN_SIDE:
        raise ImageDecodeError(
            f"{encoding} needs at least {_BAYER_MIN_SIDE}x{_BAYER_MIN_SIDE} pixels to demosaic (got {width}x{height})")
    itemsize = np.dtype(layout.dtype).itemsize
    row_bytes = width * layout.channels * itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} is smaller than width*channels*bytes = {width}*{layout.channels}*"
            f"{itemsize} = {row_bytes} for {encoding}")
    buf = _byte_buffer(msg.data)
    if buf.size < step * height:
        raise ImageDecodeError(
            f"image data has {buf.size} bytes, shorter than step*height = {step}*{height} = "
            f"{step * height}")
    byte_order = ">" if (itemsize > 1 and bool(msg.is_bigendian)) else "<"
    dtype = np.dtype(byte_order + layout.dtype)
    view = np.ndarray(
        shape=(height, width, layout.channels), dtype=dtype, buffer=buf,
        strides=(step, layout.channels * itemsize, itemsize))
    return view, encoding


def mono16_to_mono8(values: np.ndarray) -> np.ndarray:
    """Map 16-bit intensities linearly onto 8 bits: ``round(v * 255 / 65535)``.

    Equivalently ``round(v / 257)``.

    A fixed full-range rule (no auto-contrast), so a given sample always gives the same byte;
    0 -> 0, 65535 -> 255.  Integer form: ``(v + 128) // 257`` (exact because 257 is odd).
    """
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


class ImageTooLarge(ImageDecodeError):
    """The image has more pixels than the caller accepts; it was not decoded."""


def check_pixel_count(width: int, height: int, max_pixels: int | None, what: str = "image") -> None:
    """Raise ImageTooLarge when ``width`` x ``height`` exceeds ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and int(width) * int(height) > max_pixels:
        raise ImageTooLarge(f"{what} is {int(width)}x{int(height)} = {int(width) * int(height)} pixels, more than "
                            f"the {max_pixels} accepted (parameter max_input_pixels); not decoded")


def image_to_rgb(msg, max_pixels: int | None = None) -> np.ndarray:
    """Decode an Image-like message into an (H, W, 3) uint8 RGB array.

    ``max_pixels`` refuses larger images (ImageTooLarge) before their data is touched.

    rgb8 returns a view of the message buffer (zero-copy; rows may be padded when step exceeds
    width*3); other encodings return a new contiguous array.  8UC3 is read as bgr8 and 8UC1 as
    mono8 (cv_bridge's convention); mono16 uses :func:`mono16_to_mono8`; alpha is dropped.
    Bayer mosaics (bayer_rggb8 ... bayer_grbg16) are demosaiced bilinearly at their own depth;
    16-bit ones are then brought to 8 bits by the mono16 rule.
    """
    check_pixel_count(msg.width, msg.height, max_pixels)
    view, encoding = _pixel_view(msg, COLOR_ENCODINGS)
    if encoding == "rgb8":
        return view
    if encoding in ("bgr8", "8UC3"):
        return cv2.cvtColor(view, cv2.COLOR_BGR2RGB)
    if encoding == "rgba8":
        return cv2.cvtColor(view, cv2.COLOR_RGBA2RGB)
    if encoding == "bgra8":
        return cv2.cvtColor(view, cv2.COLOR_BGRA2RGB)
    if encoding in ("mono8", "8UC1"):
        return cv2.cvtColor(view[:, :, 0], cv2.COLOR_GRAY2RGB)
    if encoding == "mono16":
        return cv2.cvtColor(mono16_to_mono8(view[:, :, 0]), cv2.COLOR_GRAY2RGB)
    if encoding.startswith("bayer_"):
        return bayer_to_rgb(view[:, :, 0], encoding[len("bayer_"):len("bayer_") + 4])
    # Packed YUV 4:2:2: cv2 wants the bytes as a 2-channel image of the full width.
    return cv2.cvtColor(view, _YUV422_CODES[encoding])


def bayer_to_rgb(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """Demosaic an (H, W) uint8 or uint16 Bayer ``mosaic`` (``pattern`` rggb, bggr, gbrg or grbg:
    the filter colours of its top-left 2x2 cell, row by row) to (H, W, 3) uint8 RGB.

    Bilinear interpolation of the two missing colours at every pixel (exact on constant colour,
    and inside the image on linear gradients); 16-bit samples are demosaiced at 16 bits, then
    mapped to 8 by :func:`mono16_to_mono8`'s rule.
    """
    if pattern not in _BAYER_CODES:
        raise ImageDecodeError(f"unknown Bayer pattern {pattern!r}; supported: {', '.join(_BAYER_CODES)}")
    if mosaic.dtype.byteorder == ">":  # OpenCV wants native byte order
        mosaic = mosaic.astype(mosaic.dtype.newbyteorder("="))
    rgb = cv2.cvtColor(np.ascontiguousarray(mosaic), _BAYER_CODES[pattern])
    return mono16_to_mono8(rgb) if rgb.dtype == np.uint16 else rgb


def compressed_to_rgb(msg, max_pixels: int | None = None) -> np.ndarray:
    """Decode a CompressedImage-like message (JPEG or PNG) into (H, W, 3) uint8 RGB.

    With ``max_pixels``, the size is read from the JPEG/PNG header first and a larger image is
    refused (ImageTooLarge) without being decoded: a few hundred bytes can claim 10000x10000.

    ``format`` is image_transport's string: ``"jpeg"``, ``"png"`` or
    ``"<orig>; <jpeg|png> compressed <target>"``.  An empty format is resolved from the magic
    bytes.  compressed_image_transport stores colour as bgr8, which cv2.imdecode reads back as
    BGR; a target of rgb8/rgba8 means the channels were stored swapped, so no swap is applied.
    """
    fmt = str(getattr(msg, "format", "")).strip().lower()
    buf = _byte_buffer(msg.data)
    if "compresseddepth" in fmt:
        raise ImageDecodeError(
            f"CompressedImage format {msg.format!r} is a compressedDepth stream, "
            "not a colour image")
    if not fmt:
        kind = _sniff_kind(buf)
    elif "jpeg" in fmt or "jpg" in fmt:
        kind = "jpeg"
    elif "png" in fmt:
        kind = "png"
    else:
        raise ImageDecodeError(
            f"unsupported CompressedImage format {msg.format!r}; supported: jpeg, png")
    if buf.size == 0:
        raise ImageDecodeError(f"CompressedImage ({kind}) has no data")
    if max_pixels is not None:
        size = compressed_image_size(buf)
        if size is None:
            raise ImageDecodeError(f"corrupt {kind.upper()} data ({buf.size} bytes): no image size in its header")
        check_pixel_count(*size, max_pixels, what=f"{kind.upper()} image")
    try:
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a header claiming more pixels than OpenCV's own limit
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ImageDecodeError(f"corrupt {kind.upper()} data ({buf.size} bytes): OpenCV refused it: "
                               f"{message}") from exc
    if decoded is None:
        raise ImageDecodeError(
            f"corrupt {kind.upper()} data ({buf.size} bytes): cv2.imdecode failed")
    target = fmt.rsplit("compressed", 1)[1].strip() if "compressed" in fmt else "bgr8"
    if target.startswith("rgb"):
        return decoded
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


# JPEG start-of-frame markers (baseline, extended, progressive, lossless ...; not DHT 0xC4,
# JPG 0xC8 or DAC 0xCC, which share the range): their segment holds the image size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def compressed_image_size(data) -> tuple[int, int] | None:
    """(width, height) from a JPEG or PNG header without decoding the image; None if the data is
    neither or its header is cut short."""
    buf = _byte_buffer(data)
    head = bytes(buf[:33])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        # The IHDR chunk comes first: length(4) "IHDR"(4) width(4) height(4), big-endian.
        if len(head) < 24 or head[12:16] != b"IHDR":
            return None
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if not head.startswith(b"\xff\xd8"):
        return None
    position, size = 2, buf.size
    while position + 4 <= size:
        if buf[position] != 0xFF:
            return None
        marker = int(buf[position + 1])
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        length = (int(buf[position + 2]) << 8) | int(buf[position + 3])
        if marker in _JPEG_SOF:
            if position + 9 > size:
                return None
            height = (int(buf[position + 5]) << 8) | int(buf[position + 6])
            width = (int(buf[position + 7]) << 8) | int(buf[position + 8])
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any frame header: malformed
            return None
        position += 2 + length
    return None


def _sniff_kind(buf: np.ndarray) -> str:
    head = buf[:8].tobytes()
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head.startswith(b"\x89PNG"):
        return "png"
    raise ImageDecodeError(
        "CompressedImage has an empty format and its data is neither JPEG nor PNG")


def depth_image_to_metres(msg, stride: int = 1) -> np.ndarray:
    """Depth image -> (H, W) float32 metres along the optical axis, invalid = NaN.

    32FC1 is read as metres and 16UC1/mono16 as millimetres (REP 118).  Zero, negative and
    non-finite depths become NaN (REP 118's +/-inf "out of range" markers included).  Always a
    new array, since invalid values are rewritten.  With ``stride`` > 1 only every stride-th row
    and column is decoded (geometry.decimate: pixel (i, j) of the result is pixel
    (i*stride, j*stride)), for readers that need a sparse grid of a large image.
    """
    view, encoding = _pixel_view(msg, DEPTH_ENCODINGS)
    plane = decimate(view[:, :, 0], stride)
    if encoding == "32FC1":
        depth = plane.astype(np.float32)  # native byte order, contiguous copy
    else:
        depth = plane.astype(np.float32) / np.float32(_MM_PER_M)
    # copyto(where=) instead of boolean indexing: several times faster on full frames.
    np.copyto(depth, np.nan, where=~((depth > 0) & np.isfinite(depth)))  # NaN fails "> 0" too
    return depth


def labels_image_to_array(msg) -> np.ndarray:
    """Label image -> (H, W) integer array of class indices.

    mono8/8UC1 give a uint8 view of the message buffer (padded rows included); 16UC1/mono16
    give uint16 in native byte order (a view for little-endian data, a copy for big-endian).
    """
    view, _ = _pixel_view(msg, LABEL_ENCODINGS)
    plane = view[:, :, 0]
    if plane.dtype.byteorder == ">":
        return plane.astype(plane.dtype.newbyteorder("="))
    return plane


_OUTPUT_DTYPES = {
    "32FC1": (np.dtype("<f4"), 1),
    "mono8": (np.dtype("u1"), 1),
    "rgb8": (np.dtype("u1"), 3),
    "16UC1": (np.dtype("<u2"), 1),
}


def array_to_image_fields(array_in: np.ndarray, encoding: str, *, as_numpy: bool = False) -> dict:
    """Fields of an output Image for ``array_in``.

    Returns a dict with height, width, encoding, is_bigendian, step and data.

    Supported encodings: 32FC1 (float metres), mono8, rgb8 ((H, W, 3) RGB), 16UC1.  The array
    is cast to the encoding's dtype (float for 32FC1, unsigned int otherwise; integer inputs are
    not range-checked beyond numpy's casting), written little-endian with step = width*bytes.

    ``data`` is ``array.array('B')`` by default - the type rclpy stores, so assigning it to an
    rclpy Image involves no further conversion (rclpy would iterate a numpy array element by
    element).  ``as_numpy=True`` gives a 1-D uint8 numpy array instead, which the ``rosbags``
    typestore classes require.  Either way the bytes are a copy independent of ``array_in``.
    """
    if encoding not in _OUTPUT_DTYPES:
        raise ValueError(
            f"unsupported output encoding {encoding!r}; supported: {', '.join(OUTPUT_ENCODINGS)}")
    dtype, channels = _OUTPUT_DTYPES[encoding]
    arr = np.asarray(array_in)
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    expected_ndim = 2 if channels == 1 else 3
    if arr.ndim != expected_ndim or (channels == 3 and arr.shape[2] != 3):
        want = "(H, W)" if channels == 1 else "(H, W, 3)"
        raise ValueError(f"{encoding} needs an array of shape {want}, got {arr.shape}")
    height, width = arr.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"cannot build an image of zero size ({width}x{height})")
    packed = np.ascontiguousarray(arr, dtype=dtype).reshape(-1).view(np.uint8)
    if as_numpy:
        data = packed.copy()
    else:
        data = array.array("B")
        data.frombytes(packed)  # buffer protocol: one memcpy, no per-element conversion
    return {
        "height": int(height),
        "width": int(width),
        "encoding": encoding,
        "is_bigendian": 0,
        "step": int(width * channels * dtype.itemsize),
        "data": data,
    }
