"""The worker thread: takes the cameras' pending frames, runs them through the model, applies reloads.

Callbacks never wait for inference: they leave the newest frame of their camera pending and notify.
The worker takes every frame that is ready when it becomes free and processes them as one batch
(one forward pass for several cameras), no faster than max_rate_hz. Model reloads are requested
with the configuration to load (a snapshot taken after the parameters were stored) and applied
between batches: the old engine is released before the new one is built, so a GPU never holds
both; when the new one cannot be built, the old configuration is loaded again.
"""
from __future__ import annotations

import gc
import threading
import time
from typing import Callable

from dpt_ros.model_config import ModelConfig


class ModelHolder:
    """The engine the node runs and the configuration it was built from."""

    def __init__(self, builder: Callable[[ModelConfig], object]):
        self._builder = builder
        self.engine = None
        self.config: ModelConfig | None = None

    def load(self, config: ModelConfig):
        """Release the current engine, then build ``config``'s. Raises ModelLoadError (the holder is
        then empty)."""
        self.release()
        self.engine = self._builder(config)
        self.config = config
        return self.engine

    def release(self) -> None:
        """Drop the engine and return its memory (GPU memory included) before anything new is built."""
        engine, self.engine, self.config = self.engine, None, None
        if engine is None:
            return
        device = getattr(engine, "device", None)
        del engine
        gc.collect()  # CUDA graphs and compiled modules hold reference cycles
        if device is not None and getattr(device, "type", "cpu") == "cuda":
            import torch

            torch.cuda.empty_cache()


class Worker:
    """Runs ``process(batch)`` on ready frames of ``cameras`` in its own thread."""

    def __init__(self, cameras, condition: threading.Condition, process: Callable[[list], None],
                 reload: Callable[[ModelConfig], None], max_rate_of: Callable[[], float], logger):
        self._cameras = cameras
        self._condition = condition
        self._process = process
        self._reload = reload
        self._max_rate_of = max_rate_of
        self._logger = logger
        self._reload_request: ModelConfig | None = None
        self._running = False
        self._thread: threading.Thread | None = None
        self._last_start = 0.0
        self.stopping = False

    def start(self) -> None:
        self._running, self.stopping = True, False
        self._thread = threading.Thread(target=self._loop, name="dpt_worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to finish and wait up to ``timeout`` s; False if a frame is still in flight
        (the daemon thread is abandoned: it may be inside a long CPU forward pass)."""
        with self._condition:
            self._running, self.stopping = False, True
            self._condition.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout=timeout)
        return not self._thread.is_alive()

    def request_reload(self, config: ModelConfig) -> None:
        with self._condition:
            self._reload_request = config
            self._condition.notify_all()

    def _loop(self) -> None:
        while True:
            with self._condition:
                reload = self._wait_for_work()
                if not self._running:
                    return
            if reload is not None:
                self._reload(reload)
                continue
            if not self._wait_for_rate_limit():
                continue
            with self._condition:
                now = time.monotonic()
                batch = [(camera, camera.take()) for camera in self._cameras if camera.ready(now)]
            if batch:
                self._process(batch)

    def _wait_for_work(self) -> ModelConfig | None:
        """Wait (holding the condition) until a frame is ready, a reload is requested (returned) or
        the worker stops; a pending frame still waiting for its camera_info wakes it at its deadline."""
        while self._running:
            if self._reload_request is not None:
                reload, self._reload_request = self._reload_request, None
                return reload
            now = time.monotonic()
            if any(camera.ready(now) for camera in self._cameras):
                return None
            deadlines = [camera.pending.deadline for camera in self._cameras if camera.pending is not None]
            self._condition.wait(timeout=min([0.5] + [max(0.0, d - now) + 1e-3 for d in deadlines]))
        return None

    def _wait_for_rate_limit(self) -> bool:
        """Sleep until max_rate_hz allows the next batch (newer frames keep replacing the pending
        ones meanwhile). False if the worker was stopped while waiting."""
        rate = self._max_rate_of()
        if rate > 0.0:
            delay = self._last_start + 1.0 / rate - time.monotonic()
            if delay > 0.0:
                with self._condition:
                    self._condition.wait_for(lambda: not self._running, timeout=delay)
                if not self._running:
                    return False
        self._last_start = time.monotonic()
        return True

