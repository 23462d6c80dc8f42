"""Stopping child processes the way a terminal or ros2 launch does (ROS-free)."""
from __future__ import annotations

import signal
import subprocess


def stop_process(process: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGINT (Ctrl-C: ROS nodes shut down cleanly and flush what they record), then a kill if it
    has not exited after ``timeout`` seconds; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
