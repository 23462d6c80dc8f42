"""Test-side ROS plumbing: a node in its own context, spun in a background thread.

It records every message received per topic, publishes test inputs, and calls parameter
services, so tests can drive a dpt_node running in another OS process.
"""
from __future__ import annotations

import collections
import os
import subprocess
import threading
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from dpt_ros.processes import stop_process

stop = stop_process  # what the tests import

REPO = Path(__file__).resolve().parents[2]
INSTALL_LIB = REPO / "install" / "dpt_ros" / "lib" / "dpt_ros"


def start_executable(name: str, *ros_args: str, log_path: Path | None = None) -> subprocess.Popen:
    """Start install/dpt_ros/lib/dpt_ros/<name> exactly as `ros2 run dpt_ros <name>` would."""
    executable = INSTALL_LIB / name
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    return subprocess.Popen([str(executable), "--ros-args", *ros_args], stdout=out, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def failure_output(tmp_path: Path, *ros_args: str) -> tuple[str, str]:
    """Run dpt_node with ``ros_args`` expecting it to fail at start-up: (its one ERROR line, whole log).
    Asserts the non-zero exit, exactly one ERROR line and no traceback."""
    return failure_outputs(tmp_path, ros_args)[0]


def failure_outputs(tmp_path: Path, *ros_args_lists) -> list[tuple[str, str]]:
    """failure_output for several argument lists, the processes started together (each one's
    start-up, mostly importing torch, takes 10-20 s on a loaded 2-core machine)."""
    processes = []
    for index, ros_args in enumerate(ros_args_lists):
        log = tmp_path / f"fail{index}.log"
        processes.append((start_executable("dpt_node", *ros_args, log_path=log), log))
    outputs = []
    for process, log in processes:
        assert process.wait(timeout=120) != 0
        text = log.read_text()
        error_lines = [line for line in text.splitlines() if "ERROR" in line]
        assert len(error_lines) == 1, text
        assert "Traceback" not in text, text
        outputs.append((error_lines[0], text))
    return outputs


class Harness:
    def __init__(self, name: str = "test_harness"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.received: dict[str, list] = collections.defaultdict(list)
        self._lock = threading.Lock()
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._running = True
        self._thread.start()

    def _spin(self) -> None:
        while self._running and self.context.ok():
            self._executor.spin_once(timeout_sec=0.05)

    def subscribe(self, msg_type, topic: str, transient_local: bool = False, reliable: bool = True) -> None:
        qos = QoSProfile(depth=100,
                         reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if transient_local else DurabilityPolicy.VOLATILE)

        def store(msg, topic=topic):
            with self._lock:
                self.received[topic].append(msg)

        self.node.create_subscription(msg_type, topic, store, qos)

    def messages(self, topic: str) -> list:
        with self._lock:
            return list(self.received[topic])

    def clear(self) -> None:
        with self._lock:
            self.received.clear()

    def publisher(self, msg_type, topic: str, depth: int = 100):
        return self.node.create_publisher(msg_type, topic, QoSProfile(depth=depth))

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def wait_for_node(self, process, log: Path, publisher, timeout: float = 120.0) -> None:
        """Wait until ``process`` (a started dpt_node) subscribes to ``publisher``'s topic; fail with
        its log if it exits first (a model that cannot load, a bad parameter)."""
        self.wait_for(lambda: publisher.get_subscription_count() > 0 or process.poll() is not None, timeout,
                      f"dpt_node to subscribe to {publisher.topic_name}")
        assert process.poll() is None, f"dpt_node exited:\n{log.read_text()}"

    def stamped(self, topic: str, stamp_sec: int, timeout: float = 30.0):
        """The first message received on ``topic`` whose header stamp is ``stamp_sec`` seconds,
        waiting up to ``timeout`` for it."""
        found = []

        def arrived() -> bool:
            found[:] = [m for m in self.messages(topic) if m.header.stamp.sec == stamp_sec][:1]
            return bool(found)

        self.wait_for(arrived, timeout, f"{topic} for frame {stamp_sec}")
        return found[0]

    def wait_for_subscribers(self, publisher, count: int = 1, timeout: float = 30.0) -> None:
        self.wait_for(lambda: publisher.get_subscription_count() >= count, timeout,
                      f"{count} subscriber(s) on {publisher.topic_name}")

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {name} not available")
            future = client.call_async(request)
            self.wait_for(future.done, timeout, f"reply from {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5.0)
        self._executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
