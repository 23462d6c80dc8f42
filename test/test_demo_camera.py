"""demo_camera, run from the install space as `ros2 run` would, observed from another process."""
import contextlib
import math
import os
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parent.parent
EXECUTABLE = REPO / "install" / "dpt_ros" / "lib" / "dpt_ros" / "demo_camera"
WIDTH, HEIGHT, RATE_HZ = 160, 120, 20


@contextlib.contextmanager
def camera(*parameters, max_frames):
    """The installed demo_camera at RATE_HZ, WIDTH x HEIGHT, with extra ``name:=value`` parameters;
    killed on the way out if it is still running."""
    if not EXECUTABLE.is_file():
        pytest.fail(f"{EXECUTABLE} missing: run scripts/setup.sh")
    arguments = [str(EXECUTABLE), "--ros-args", "-p", f"max_frames:={max_frames}", "-p", f"rate_hz:={RATE_HZ}",
                 "-p", f"width:={WIDTH}", "-p", f"height:={HEIGHT}"]
    for parameter in parameters:
        arguments += ["-p", parameter]
    process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def output_of(process, timeout_s=15):
    """Everything the process printed; it must exit by itself within ``timeout_s``."""
    return process.communicate(timeout=timeout_s)[0].decode(errors="replace")


def receive_until_exit(process, want_compressed=False, reliable_image=False, timeout_s=40.0):
    """Collect image, camera_info (and image/compressed) messages until the camera process exits.

    image is read best-effort (SensorData, as dpt_node does; reliable on request) and
    camera_info reliable: the camera's reliable publishers must serve both kinds of reader.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    received = {"image": [], "camera_info": [], "image/compressed": []}
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("demo_camera_observer", context=context)
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "image", received["image"].append,
                             reliable if reliable_image else qos_profile_sensor_data)
    node.create_subscription(CameraInfo, "camera_info", received["camera_info"].append, reliable)
    if want_compressed:
        node.create_subscription(CompressedImage, "image/compressed", received["image/compressed"].append, reliable)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout_s
    try:
        while process.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        for _ in range(10):  # anything still in flight
            executor.spin_once(timeout_sec=0.02)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    return received


def pixels(image):
    return np.frombuffer(bytes(image.data), dtype=np.uint8).reshape(image.height, image.width, 3)


def stamp_ns(header):
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def test_publishes_matching_image_and_camera_info_and_exits_after_max_frames():
    max_frames = 60  # 3 s at 20 Hz: discovery takes part of that, the rest must arrive
    with camera(max_frames=max_frames) as process:
        received = receive_until_exit(process)
        output = output_of(process)
    assert process.returncode == 0, output
    assert f"published {max_frames} frames" in output
    images, infos = received["image"], received["camera_info"]
    assert len(images) >= 10 and len(infos) >= 10, (len(images), len(infos), output)
    assert len(images) <= max_frames and len(infos) <= max_frames

    infos_by_stamp = {stamp_ns(info.header): info for info in infos}
    paired = 0
    fx = (WIDTH / 2) / math.tan(math.radians(70.0) / 2)
    for image in images:
        assert (image.encoding, image.width, image.height, image.step) == ("rgb8", WIDTH, HEIGHT, 3 * WIDTH)
        assert image.header.frame_id == "demo_camera_optical_frame"
        info = infos_by_stamp.get(stamp_ns(image.header))
        if info is None:
            continue  # its camera_info was published before we were discovered
        paired += 1
        assert info.header == image.header
        assert (info.width, info.height, info.distortion_model) == (WIDTH, HEIGHT, "plumb_bob")
        np.testing.assert_allclose(info.k, [fx, 0, 79.5, 0, fx, 59.5, 0, 0, 1], rtol=1e-12)
        np.testing.assert_allclose(info.p, [fx, 0, 79.5, 0, 0, fx, 59.5, 0, 0, 0, 1, 0], rtol=1e-12)
        np.testing.assert_array_equal(info.r, np.eye(3).ravel())
        np.testing.assert_array_equal(info.d, np.zeros(5))
    assert paired >= len(images) - 2, f"only {paired} of {len(images)} images had a camera_info with their stamp"

    stamps = [stamp_ns(image.header) for image in images]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    period_ns = np.median(np.diff(stamps))
    assert 0.5e9 / RATE_HZ < period_ns < 2e9 / RATE_HZ, period_ns
    # The scene moves: frames a second apart differ, but only where the spheres are.
    first, later = pixels(images[0]), pixels(images[min(RATE_HZ, len(images) - 1)])
    changed = np.any(first != later, axis=-1).mean()
    assert 0.005 < changed < 0.5, changed


def test_bgr8_and_compressed_carry_the_same_picture():
    with camera("encoding:=bgr8", "compressed:=true", max_frames=40) as process:
        received = receive_until_exit(process, want_compressed=True)
        output = output_of(process)
    assert process.returncode == 0, output
    raw_by_stamp = {stamp_ns(image.header): image for image in received["image"]}
    compared = 0
    for compressed in received["image/compressed"]:
        assert compressed.format == "bgr8; jpeg compressed bgr8"
        assert compressed.header.frame_id == "demo_camera_optical_frame"
        raw = raw_by_stamp.get(stamp_ns(compressed.header))
        if raw is None:
            continue
        assert raw.encoding == "bgr8"
        decoded = cv2.imdecode(np.frombuffer(bytes(compressed.data), np.uint8), cv2.IMREAD_COLOR)  # BGR
        error = np.abs(decoded.astype(np.int16) - pixels(raw).astype(np.int16)).mean()
        assert error < 6.0, error  # JPEG at quality 90, same channel order
        # Swapping channels makes it far worse, so bgr8 really holds blue first.
        swapped = np.abs(decoded[:, :, ::-1].astype(np.int16) - pixels(raw).astype(np.int16)).mean()
        assert swapped > 3 * error + 5
        compared += 1
    assert compared >= 5, (compared, output)


def test_image_dir_frames_are_the_directory_images_resized_in_name_order(tmp_path):
    colours = {"a.png": (255, 0, 0), "b.jpg": (0, 200, 0), "c.png": (20, 40, 240)}  # RGB
    for name, rgb in colours.items():
        picture = np.zeros((60, 90, 3), np.uint8)  # other size than WIDTH x HEIGHT: gets resized
        picture[:] = rgb[::-1]
        cv2.imwrite(str(tmp_path / name), picture)
    (tmp_path / "notes.txt").write_text("not an image")
    with camera(f"image_dir:={tmp_path}", max_frames=30) as process:
        # Reliable, so no frame is missed between the first and the last one received.
        received = receive_until_exit(process, reliable_image=True)
        output = output_of(process)
    assert process.returncode == 0, output
    assert "3 images from" in output
    images = received["image"]
    assert len(images) >= 6, output
    expected = list(colours.values())
    shown = []
    for image in images:
        assert (image.width, image.height) == (WIDTH, HEIGHT)
        mean = pixels(image).reshape(-1, 3).mean(axis=0)
        nearest = int(np.argmin([np.abs(mean - c).max() for c in expected]))
        assert np.abs(mean - expected[nearest]).max() < 3, mean
        shown.append(nearest)
    # Cycled in name order: each next frame shows the next image.
    assert all((b - a) % 3 == 1 for a, b in zip(shown, shown[1:])), shown


@pytest.mark.parametrize("parameter, message", [
    ("encoding:=yuv422", "encoding 'yuv422' is not one of rgb8, bgr8"),
    ("horizontal_fov_deg:=190", "horizontal_fov_deg=190 is outside [10, 170]"),
    ("image_dir:=/nonexistent/dpt_ros", "is not a directory"),
])
def test_bad_parameters_stop_it_with_a_clear_error(parameter, message):
    with camera(parameter, max_frames=1) as process:
        output = output_of(process, timeout_s=30)
    assert process.returncode == 2
    assert message in output


def test_synthetic_room_is_drawn_with_the_published_intrinsics():
    """Each sphere appears where camera_info's pinhole projects its centre, at the size it
    projects its radius, so depth estimated from the demo stream can be checked against the scene."""
    from dpt_ros.demo_camera import SyntheticRoom, pinhole_intrinsics

    width, height = 640, 480
    fx, fy, cx, cy = intrinsics = pinhole_intrinsics(width, height, 70.0)
    assert (cx, cy) == (319.5, 239.5) and fx == fy == pytest.approx(320 / math.tan(math.radians(35)))
    room = SyntheticRoom(width, height, intrinsics)
    seconds = 0.0  # a moment when no sphere hides another
    frame = room.frame(0, seconds)
    for (x, y, z), (colour, radius, *_) in zip(room.sphere_centres(seconds), SyntheticRoom.SPHERES):
        u, v = cx + fx * x / z, cy + fy * y / z
        row = frame[int(round(v))].astype(int)
        dominant = int(np.argmax(colour))
        is_sphere = (np.argmax(row, axis=1) == dominant) & (row[:, dominant] > row.sum(axis=1) - row[:, dominant])
        assert is_sphere[int(round(u))], (colour, u, v, row[int(round(u))])
        # The run of sphere pixels along that row spans the sphere's silhouette there: the rays
        # (dx, dy, 1) of the row tangent to the sphere solve (dx x + k)^2 = (dx^2 + m) q with
        # k = dy y + z, m = dy^2 + 1, q = |centre|^2 - radius^2 (off-axis spheres look stretched).
        left = right = int(round(u))
        while left > 0 and is_sphere[left - 1]:
            left -= 1
        while right < width - 1 and is_sphere[right + 1]:
            right += 1
        dy = (int(round(v)) - cy) / fy
        k, m, q = dy * y + z, dy * dy + 1, x * x + y * y + z * z - radius * radius
        tangent_dx = np.roots([x * x - q, 2 * x * k, k * k - m * q])
        silhouette_width = fx * abs(tangent_dx[0] - tangent_dx[1])
        assert right - left + 1 == pytest.approx(silhouette_width, abs=2), colour
    assert not np.array_equal(frame, room.frame(1, seconds + 0.2))
