"""Process-level helpers (ROS-free): stopping child processes the way a terminal or ros2 launch does,
and the glibc tuning the node and its benchmarks run with."""
from __future__ import annotations

import ctypes
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


def keep_large_buffers_mapped() -> None:
    """Stop glibc from returning every multi-MB frame buffer to the kernel on free.

    By default buffers above the dynamic mmap threshold are unmapped when freed, so each new
    frame's depth/cloud/message buffers page-fault again: measured 16-24 ms per 640x480 cloud
    frame instead of about 4 ms with these thresholds (see benchmarks/NOTES.md).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)
