"""demo_camera: a ROS 2 camera that needs no hardware, for demos and tests of dpt_node.

Publishes ``image`` (sensor_msgs/Image, rgb8 or bgr8), ``camera_info`` (sensor_msgs/CameraInfo,
an ideal pinhole: fx = fy from the horizontal field of view, principal point at the image centre,
plumb_bob with zero distortion) and optionally ``image/compressed`` (JPEG), all with one header:
the same stamp and frame_id.  Frames are either a synthetic room rendered with that same pinhole
(textured floor, walls and ceiling, three spheres rolling about), so the scene geometry agrees with
camera_info, or the images of a directory (``image_dir``), resized to width x height and cycled.

QoS: reliable, keep-last depth 5, volatile.  A reliable publisher serves both reliable subscribers
and best-effort ones (SensorData QoS, dpt_node's default), whereas a best-effort publisher would
be invisible to reliable subscribers; depth 5 bounds the memory a slow reliable reader can hold up.

Run:  ros2 run dpt_ros demo_camera --ros-args -p rate_hz:=10.0 -p image_dir:=/path/to/pngs
"""
from __future__ import annotations

import array
import math
import signal
import sys
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

ENCODINGS = ("rgb8", "bgr8")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
JPEG_QUALITY = 90
PUBLISHER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                           reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


class DemoCameraConfigError(ValueError):
    """A parameter value the demo camera cannot work with; the message says which and why."""


# --------------------------------------------------------------------------------------------
# Intrinsics and CameraInfo
# --------------------------------------------------------------------------------------------

def pinhole_intrinsics(width: int, height: int, horizontal_fov_deg: float) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of an ideal camera: square pixels, principal point at the image centre.

    The horizontal field of view spans the full image width: fx = (width / 2) / tan(fov / 2).
    cx = (width - 1) / 2 because pixel centres sit at integer coordinates (REP 104 / OpenCV).
    """
    fx = (width / 2.0) / math.tan(math.radians(horizontal_fov_deg) / 2.0)
    return fx, fx, (width - 1) / 2.0, (height - 1) / 2.0


def camera_info_message(header: Header, width: int, height: int,
                        intrinsics: tuple[float, float, float, float]) -> CameraInfo:
    fx, fy, cx, cy = intrinsics
    info = CameraInfo()
    info.header = header
    info.width, info.height = width, height
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def image_message(header: Header, pixels: np.ndarray, encoding: str) -> Image:
    """An Image holding ``pixels`` ((H, W, 3) uint8, already in ``encoding``'s channel order)."""
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(pixels))  # the type rclpy stores: one memcpy, no per-byte work
    msg.data = data
    return msg


def compressed_message(header: Header, rgb: np.ndarray, encoding: str) -> CompressedImage:
    """A JPEG CompressedImage with image_transport's format string ("<encoding>; jpeg compressed bgr8")."""
    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 3-channel array
        raise RuntimeError("OpenCV failed to JPEG-encode a frame")
    msg = CompressedImage()
    msg.header = header
    msg.format = f"{encoding}; jpeg compressed bgr8"
    data = array.array("B")
    data.frombytes(jpeg)
    msg.data = data
    return msg


# --------------------------------------------------------------------------------------------
# Frame sources (no ROS): frame(index, seconds) -> (H, W, 3) uint8 RGB
# --------------------------------------------------------------------------------------------

class SyntheticRoom:
    """A room seen by a fixed pinhole camera, with spheres rolling on the floor.

    Geometry in the camera's optical frame (x right, y down, z forward), metres.  The static room
    (floor, walls, ceiling) is ray-cast once, 2x2 supersampled against aliasing of the far floor
    tiles; each frame copies it and ray-casts only the spheres' bounding boxes, so a 640x480 frame
    costs a few milliseconds.  Sphere motion is a function of time alone, so frame n of a run at a
    given rate is the same in every run.
    """

    CAMERA_HEIGHT = 1.4   # camera above the floor
    ROOM_HEIGHT = 3.0     # floor to ceiling
    HALF_WIDTH = 3.0      # walls at x = +-HALF_WIDTH
    BACK_WALL = 10.0      # back wall at z = BACK_WALL
    LIGHT = np.array([0.35, 0.8, 0.48])  # direction the light travels: from above, left, behind us
    # colour (RGB), radius, path centre (x, z), path half-axes (x, z), angular speed rad/s, phase rad
    SPHERES = (
        ((220, 45, 40), 0.45, (-1.0, 5.0), (1.2, 1.5), 0.8, 0.0),
        ((40, 185, 70), 0.35, (1.2, 6.5), (1.0, 2.0), -0.6, 1.0),
        ((55, 95, 235), 0.60, (0.0, 8.0), (1.8, 0.8), 0.4, 2.0),
    )

    def __init__(self, width: int, height: int, intrinsics: tuple[float, float, float, float]):
        self.width, self.height = width, height
        self.fx, self.fy, self.cx, self.cy = intrinsics
        self._light = -self.LIGHT / np.linalg.norm(self.LIGHT)  # towards the light, for shading
        # Ray direction of every pixel (z component 1, so a ray parameter is the depth Z).
        self._ray_x, self._ray_y = self._rays(width, height, self.fx, self.fy, self.cx, self.cy)
        depth, surface = self._cast_room(self._ray_x, self._ray_y)
        self._floor = surface == 0
        self._floor_x = self._ray_x * depth  # floor hit points, for the spheres' shadows
        self._floor_z = depth
        self._depth = depth.astype(np.float32)
        # Supersampled colour: render at twice the resolution, then area-average down.
        fx2, fy2, cx2, cy2 = 2 * self.fx, 2 * self.fy, 2 * self.cx + 0.5, 2 * self.cy + 0.5
        rx2, ry2 = self._rays(2 * width, 2 * height, fx2, fy2, cx2, cy2)
        depth2, surface2 = self._cast_room(rx2, ry2)
        colour2 = self._shade_room(rx2 * depth2, ry2 * depth2, depth2, surface2)
        self._background = cv2.resize(colour2, (width, height), interpolation=cv2.INTER_AREA)

    @staticmethod
    def _rays(width, height, fx, fy, cx, cy):
        u = (np.arange(width, dtype=np.float64) - cx) / fx
        v = (np.arange(height, dtype=np.float64) - cy) / fy
        return np.broadcast_to(u, (height, width)), np.broadcast_to(v[:, None], (height, width))

    def _cast_room(self, ray_x, ray_y):
        """Depth of the nearest room surface along each ray and its id (0 floor, 1 ceiling,
        2 left wall, 3 right wall, 4 back wall)."""
        inf = np.inf
        with np.errstate(divide="ignore"):
            candidates = np.stack([
                np.where(ray_y > 0, self.CAMERA_HEIGHT / ray_y, inf),
                np.where(ray_y < 0, (self.CAMERA_HEIGHT - self.ROOM_HEIGHT) / ray_y, inf),
                np.where(ray_x < 0, -self.HALF_WIDTH / ray_x, inf),
                np.where(ray_x > 0, self.HALF_WIDTH / ray_x, inf),
                np.full(ray_x.shape, self.BACK_WALL),
            ])
        surface = np.argmin(candidates, axis=0)
        depth = np.take_along_axis(candidates, surface[None], axis=0)[0]
        return depth, surface

    def _shade_room(self, x, y, z, surface):
        """RGB of the room surfaces at hit points (x, y, z): patterns are laid out in metres, so
        they shrink with distance as real texture does. Each pattern is evaluated only on the
        pixels of its own surface."""
        colour = np.zeros(x.shape + (3,), dtype=np.float64)
        patterns = (self._floor_pattern, self._ceiling_pattern, self._left_wall_pattern,
                    self._right_wall_pattern, self._back_wall_pattern)
        for index, pattern in enumerate(patterns):
            mask = surface == index
            colour[mask] = pattern(x[mask], self.CAMERA_HEIGHT - y[mask], z[mask])
        # Light falls off with distance; walls get a little less than the floor.
        distance = np.sqrt(x * x + y * y + z * z)
        falloff = 1.0 / (1.0 + 0.045 * distance)
        surface_gain = np.array([1.0, 0.95, 0.85, 0.9, 0.9])[surface]
        colour *= (falloff * surface_gain * 1.25)[..., None]
        return np.clip(colour, 0, 255).astype(np.uint8)

    # Patterns: (x, height above the floor, z) of N points -> (N, 3) RGB.

    @staticmethod
    def _near_integer(values, tolerance):
        return np.abs(values - np.round(values)) < tolerance

    def _floor_pattern(self, x, _, z):
        # 0.5 m checker tiles in two wood tones, dark 1 cm grout lines.
        tile = (np.floor(x / 0.5) + np.floor(z / 0.5)).astype(np.int64) & 1
        rgb = np.where(tile[:, None] == 1, [176.0, 138.0, 96.0], [122.0, 88.0, 58.0])
        rgb[self._near_integer(x / 0.5, 0.02) | self._near_integer(z / 0.5, 0.02)] = (60.0, 50.0, 40.0)
        return rgb

    def _ceiling_pattern(self, x, _, z):
        # Grey, with a bright light panel every 2 m along z.
        panel = (np.mod(z, 2.0) < 0.8) & (np.abs(x) < 0.6)
        return np.where(panel[:, None], [250.0, 250.0, 240.0], [200.0, 200.0, 205.0])

    def _left_wall_pattern(self, _, h, __):
        # Blue-grey planks 0.25 m high, each a slightly different tone, with dark joints.
        plank = np.floor(h / 0.25)
        rgb = np.stack([90 + 12 * np.sin(plank * 1.7), 110 + 10 * np.sin(plank * 2.3), 140 + 15 * np.cos(plank)], -1)
        rgb[self._near_integer(h / 0.25, 0.04)] = (50.0, 60.0, 75.0)
        return rgb

    def _right_wall_pattern(self, _, h, z):
        # Cream, with framed colourful pictures 1.2 m wide between 1.0 and 2.0 m, every 2.5 m.
        rgb = np.tile([215.0, 205.0, 175.0], (z.size, 1))
        along = np.mod(z, 2.5)
        frame = (along > 0.6) & (along < 1.8) & (h > 1.0) & (h < 2.0)
        inside = (along > 0.66) & (along < 1.74) & (h > 1.06) & (h < 1.94)
        picture = np.stack([120 + 100 * np.sin(z * 5.0), 90 + 80 * np.sin(h * 9.0 + 1.0),
                            110 + 90 * np.cos(z * 3.0 + h * 4.0)], -1)
        rgb[inside] = picture[inside]
        rgb[frame & ~inside] = (70.0, 45.0, 30.0)
        return rgb

    def _back_wall_pattern(self, x, h, _):
        # Bricks 0.25 x 0.1 m, every other course offset by half a brick, light mortar.
        course = np.floor(h / 0.1)
        along = x / 0.25 + 0.5 * (course.astype(np.int64) & 1)
        tone = 0.85 + 0.15 * np.sin(np.floor(along) * 12.9898 + course * 78.233)
        rgb = np.stack([165 * tone, 75 * tone, 55 * tone], -1)
        rgb[self._near_integer(h / 0.1, 0.08) | self._near_integer(along, 0.03)] = (185.0, 180.0, 170.0)
        return rgb

    def sphere_centres(self, seconds: float) -> list[tuple[float, float, float]]:
        """Sphere centres (x, y, z) at time ``seconds``; each rests on the floor."""
        centres = []
        for _, radius, (px, pz), (ax, az), speed, phase in self.SPHERES:
            angle = speed * seconds + phase
            centres.append((px + ax * math.cos(angle), self.CAMERA_HEIGHT - radius, pz + az * math.sin(angle)))
        return centres

    def frame(self, index: int, seconds: float) -> np.ndarray:
        del index  # the scene is a function of time only
        image = self._background.copy()
        depth = self._depth.copy()
        spheres = [(centre, spec[1], spec[0]) for centre, spec in zip(self.sphere_centres(seconds), self.SPHERES)]
        for centre, radius, _ in spheres:
            self._draw_shadow(image, centre, radius)
        for centre, radius, colour in spheres:
            self._draw_sphere(image, depth, centre, radius, colour)
        return image

    def _box(self, x_range, y_range, z_range):
        """Pixel bounding box (rows, cols slices) of the 3D box x_range x y_range x z_range, or None
        when it is off-image or reaches behind the camera. The corners' projections bound the
        projection of anything inside the box."""
        if z_range[0] <= 0.05:
            return None
        us = [self.cx + self.fx * x / z for x in x_range for z in z_range]
        vs = [self.cy + self.fy * y / z for y in y_range for z in z_range]
        u0, u1 = max(int(math.floor(min(us))) - 1, 0), min(int(math.ceil(max(us))) + 2, self.width)
        v0, v1 = max(int(math.floor(min(vs))) - 1, 0), min(int(math.ceil(max(vs))) + 2, self.height)
        return (slice(v0, v1), slice(u0, u1)) if u0 < u1 and v0 < v1 else None

    def _draw_shadow(self, image, centre, radius):
        """Darken the floor under a sphere with a soft disc."""
        cx, _, cz = centre
        reach = 1.6 * radius
        floor_y = (self.CAMERA_HEIGHT, self.CAMERA_HEIGHT)
        box = self._box((cx - reach, cx + reach), floor_y, (cz - reach, cz + reach))
        if box is None:
            return
        dx = self._floor_x[box] - cx
        dz = self._floor_z[box] - cz
        darkness = 0.55 * np.exp(-(dx * dx + dz * dz) / (0.5 * radius * radius)) * self._floor[box]
        region = image[box].astype(np.float32)
        region *= (1.0 - darkness)[..., None]
        image[box] = region.astype(np.uint8)

    def _draw_sphere(self, image, depth, centre, radius, colour):
        cx, cy, cz = centre
        box = self._box((cx - radius, cx + radius), (cy - radius, cy + radius), (cz - radius, cz + radius))
        if box is None:
            return
        dx, dy = self._ray_x[box], self._ray_y[box]
        # Ray t*(dx, dy, 1) meets the sphere where a t^2 - 2 b t + c = 0.
        a = dx * dx + dy * dy + 1.0
        b = dx * cx + dy * cy + cz
        c = cx * cx + cy * cy + cz * cz - radius * radius
        disc = b * b - a * c
        hit = disc > 0
        t = (b - np.sqrt(np.where(hit, disc, 0.0))) / a
        hit &= t < depth[box]
        if not hit.any():
            return
        normal = np.stack([dx * t - cx, dy * t - cy, t - cz], -1) / radius
        diffuse = np.clip(normal @ self._light, 0.0, None)
        # Blinn-Phong highlight with the viewer at the origin.
        view = -np.stack([dx, dy, np.ones_like(dx)], -1) / np.sqrt(a)[..., None]
        half = view + self._light
        half /= np.linalg.norm(half, axis=-1, keepdims=True)
        specular = np.clip(np.sum(normal * half, -1), 0.0, None) ** 40
        shade = (0.22 + 0.78 * diffuse)[..., None] * np.asarray(colour, dtype=np.float64) + 200.0 * specular[..., None]
        region = image[box]
        region[hit] = np.clip(shade[hit], 0, 255).astype(np.uint8)
        depth[box] = np.where(hit, t, depth[box])


class ImageDirectory:
    """The images of a directory in name order, converted to RGB and resized to width x height
    (so one CameraInfo fits them all), loaded once at start-up and cycled."""

    def __init__(self, directory: str | Path, width: int, height: int):
        directory = Path(directory).expanduser()
        if not directory.is_dir():
            raise DemoCameraConfigError(f"image_dir {str(directory)!r} is not a directory")
        self.skipped: list[str] = []
        self.images: list[np.ndarray] = []
        for path in sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                self.skipped.append(path.name)
                continue
            if bgr.shape[:2] != (height, width):
                shrinking = bgr.shape[0] > height or bgr.shape[1] > width
                bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
            self.images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if not self.images:
            raise DemoCameraConfigError(
                f"image_dir {str(directory)!r} holds no readable image ({', '.join(IMAGE_SUFFIXES)})")

    def frame(self, index: int, seconds: float) -> np.ndarray:
        del seconds
        return self.images[index % len(self.images)]


# --------------------------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------------------------

def _descriptor(description: str, *, floating=None, integer=None, constraints: str = "") -> ParameterDescriptor:
    # Every parameter is read once at start-up, hence read-only: a change needs a restart.
    descriptor = ParameterDescriptor(description=description, additional_constraints=constraints, read_only=True)
    if floating is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=floating[0], to_value=floating[1], step=0.0)]
        # `-p rate_hz:=20` arrives as an integer; accept it (checked and converted in _number).
        descriptor.dynamic_typing = True
    if integer is not None:
        descriptor.integer_range = [IntegerRange(from_value=integer[0], to_value=integer[1], step=1)]
    return descriptor


class DemoCamera(Node):
    """Publishes a frame, its CameraInfo and optionally its JPEG at ``rate_hz``."""

    def __init__(self, **node_kwargs):
        super().__init__("demo_camera", **node_kwargs)
        self.rate_hz = self._number("rate_hz", 5.0, (0.1, 1000.0), "frames published per second")
        self.width = self.declare_parameter(
            "width", 640, _descriptor("image width in pixels", integer=(16, 8192))).value
        self.height = self.declare_parameter(
            "height", 480, _descriptor("image height in pixels", integer=(16, 8192))).value
        self.frame_id = self.declare_parameter(
            "frame_id", "demo_camera_optical_frame",
            _descriptor("header.frame_id of every message: the camera's optical frame (REP 103)")).value
        self.fov_deg = self._number("horizontal_fov_deg", 70.0, (10.0, 170.0),
                                    "horizontal field of view in degrees; sets fx = fy in camera_info")
        image_dir = self.declare_parameter(
            "image_dir", "", _descriptor("directory of images to publish in name order, resized to "
                                         "width x height and repeated; empty = the synthetic room")).value
        self.encoding = self.declare_parameter(
            "encoding", "rgb8", _descriptor("pixel encoding of `image`", constraints="rgb8 or bgr8")).value
        self.compressed = self.declare_parameter(
            "compressed", False, _descriptor("also publish `image/compressed` (JPEG, image_transport format)")).value
        self.max_frames = self.declare_parameter(
            "max_frames", 0, _descriptor("exit after publishing this many frames; 0 = run until stopped",
                                         integer=(0, 2**31 - 1))).value
        if self.encoding not in ENCODINGS:
            raise DemoCameraConfigError(f"encoding {self.encoding!r} is not one of {', '.join(ENCODINGS)}")
        if not self.frame_id:
            raise DemoCameraConfigError("frame_id must not be empty")

        self.intrinsics = pinhole_intrinsics(self.width, self.height, self.fov_deg)
        if image_dir:
            self.source = ImageDirectory(image_dir, self.width, self.height)
            if self.source.skipped:
                self.get_logger().warning(f"unreadable images skipped: {', '.join(self.source.skipped)}")
            what = f"{len(self.source.images)} images from {image_dir}"
        else:
            self.source = SyntheticRoom(self.width, self.height, self.intrinsics)
            what = "a synthetic room with moving spheres"

        self.image_pub = self.create_publisher(Image, "image", PUBLISHER_QOS)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", PUBLISHER_QOS)
        self.compressed_pub = (self.create_publisher(CompressedImage, "image/compressed", PUBLISHER_QOS)
                               if self.compressed else None)
        self.frames_published = 0
        self.finished = False
        self.timer = self.create_timer(1.0 / self.rate_hz, self._publish_frame)

        topics = [self.image_pub.topic_name, self.info_pub.topic_name]
        topics += [self.compressed_pub.topic_name] if self.compressed_pub else []
        limit = f", stopping after {self.max_frames} frames" if self.max_frames else ""
        self.get_logger().info(
            f"publishing {what}: {self.width}x{self.height} {self.encoding} at {self.rate_hz:g} Hz on "
            f"{', '.join(topics)}, frame_id {self.frame_id}, fx=fy={self.intrinsics[0]:.2f} "
            f"(horizontal fov {self.fov_deg:g} deg){limit}")

    def _number(self, name: str, default: float, limits: tuple[float, float], description: str) -> float:
        value = self.declare_parameter(
            name, default, _descriptor(f"{description} [{limits[0]:g}, {limits[1]:g}]", floating=limits)).value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DemoCameraConfigError(f"{name} must be a number, got {value!r}")
        if not limits[0] <= value <= limits[1]:
            raise DemoCameraConfigError(f"{name}={value} is outside [{limits[0]:g}, {limits[1]:g}]")
        return float(value)

    def _publish_frame(self) -> None:
        if self.finished:
            return
        index = self.frames_published
        rgb = self.source.frame(index, index / self.rate_hz)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        pixels = rgb if self.encoding == "rgb8" else rgb[:, :, ::-1]
        # camera_info first, as camera drivers do: a subscriber pairing by stamp has it when the image comes.
        self.info_pub.publish(camera_info_message(header, self.width, self.height, self.intrinsics))
        self.image_pub.publish(image_message(header, pixels, self.encoding))
        if self.compressed_pub is not None:
            self.compressed_pub.publish(compressed_message(header, rgb, self.encoding))
        self.frames_published += 1
        if self.max_frames and self.frames_published >= self.max_frames:
            self.finished = True
            self.timer.cancel()

    def flush(self, timeout_s: float = 1.0) -> None:
        """Give reliable subscribers up to ``timeout_s`` to acknowledge what was published, so the
        last frames are not lost when the process exits right after publishing them."""
        publishers = [p for p in (self.image_pub, self.info_pub, self.compressed_pub) if p is not None]
        for publisher in publishers:
            publisher.wait_for_all_acked(Duration(nanoseconds=int(timeout_s * 1e9)))


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = None
    try:
        try:
            node = DemoCamera()
        except (DemoCameraConfigError, ParameterException) as error:
            rclpy.logging.get_logger("demo_camera").error(f"cannot start: {error}")
            return 2
        while rclpy.ok() and not node.finished:
            rclpy.spin_once(node, timeout_sec=0.1)
        if node.finished:
            node.flush()
            node.get_logger().info(f"published {node.frames_published} frames; exiting")
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        # One Ctrl-C both shuts rclpy down and raises KeyboardInterrupt at the next bytecode; a second
        # one comes from terminals and launch: neither may interrupt the clean-up with a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
