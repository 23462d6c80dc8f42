"""A real Ctrl-C for a command under test: SIGINT to its process once its stderr shows it is
where the test wants it."""
from __future__ import annotations

import signal
import subprocess
import threading
import time
from typing import Callable


def interrupt_when(process: subprocess.Popen, ready: Callable[[str], bool], timeout_s: float,
                   exit_timeout_s: float = 60.0) -> tuple[int, str]:
    """Read ``process``' stderr (a pipe) until ``ready(everything so far)``, send SIGINT and wait
    for the exit; returns (exit code, stderr).  Fails the test if the process exits first or
    ``ready`` does not come within ``timeout_s``; never leaves the process running."""
    stderr: list[str] = []
    ready_seen = threading.Event()

    def watch():  # progress bars write "\r" updates, not lines: read what arrives
        while chunk := process.stderr.read1(4096):
            stderr.append(chunk.decode(errors="replace"))
            if ready("".join(stderr)):
                ready_seen.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not ready_seen.wait(timeout=0.2):
            assert process.poll() is None, f"exited early: {''.join(stderr)}"
            assert time.monotonic() < deadline, "".join(stderr)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=exit_timeout_s)
    finally:
        if process.poll() is None:
            process.kill()
    watcher.join(timeout=5)
    return code, "".join(stderr)
