"""Host <-> device copies through page-locked buffers kept per shape (ROS-free).

A copy between pageable host memory and a GPU goes through the driver's own small pinned buffer,
chunk by chunk, and cannot overlap anything; allocating page-locked memory per frame costs more
than the copy.  ``HostStaging`` keeps one page-locked buffer per (shape, dtype) and direction and
reuses it frame after frame: uploads are asynchronous (the buffer is not refilled before the
previous copy out of it has finished), downloads wait for their own copy only (an event on the
current stream, not a device-wide synchronize) and hand back an array of their own, so the buffer
can serve the next frame while the caller keeps the result.

On a CPU device no staging is needed: uploads return a tensor sharing the array's memory and
downloads a numpy view of the tensor, so the CPU path copies nothing more than it did before.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch

# Buffers kept per direction; a node sees a few shapes per camera (image, depth, labels, cloud).
MAX_BUFFERS = 16


class HostStaging:
    """Reused page-locked buffers for the copies of one device (one instance per engine)."""

    def __init__(self, device: torch.device, max_buffers: int = MAX_BUFFERS):
        self._device = torch.device(device)
        self._pinned = self._device.type == "cuda"
        self._max = max_buffers
        self._lock = threading.Lock()
        # (direction, shape, dtype) -> (pinned tensor, event recorded after its last copy or None)
        self._buffers: OrderedDict[tuple, list] = OrderedDict()

    @property
    def buffers(self) -> int:
        """Page-locked buffers held now (for tests and diagnostics)."""
        return len(self._buffers)

    def upload(self, array: np.ndarray) -> torch.Tensor:
        """A device tensor with the contents of ``array`` (C-contiguous copy made if needed)."""
        array = np.ascontiguousarray(array)
        host = torch.from_numpy(array)
        if not self._pinned:
            return host.to(self._device)  # CPU: shares the array's memory
        with self._lock:
            entry = self._buffer("up", tuple(array.shape), host.dtype)
            if entry[1] is not None:
                entry[1].synchronize()  # the previous upload out of this buffer has left it
            entry[0].copy_(host)
            on_device = entry[0].to(self._device, non_blocking=True)
            entry[1] = _recorded_event(self._device)
        return on_device

    def to_host(self, tensor: torch.Tensor) -> np.ndarray:
        """``tensor`` as a numpy array the caller owns (a view of a CPU tensor)."""
        if tensor.device.type == "cpu":
            return tensor.numpy()
        out = np.empty(tuple(tensor.shape), _numpy_dtype(tensor.dtype))
        self.copy_into(tensor, out)
        return out

    def copy_into(self, tensor: torch.Tensor, out: np.ndarray) -> None:
        """Copy ``tensor`` into the host array ``out`` (same shape and dtype, C-contiguous: a view of
        a message buffer, say), waiting for this copy only."""
        if tensor.device.type == "cpu":
            torch.from_numpy(out).copy_(tensor)
            return
        with self._lock:
            entry = self._buffer("down", tuple(tensor.shape), tensor.dtype)
            entry[0].copy_(tensor, non_blocking=True)
            _recorded_event(tensor.device).synchronize()
            np.copyto(out, entry[0].numpy(), casting="no")

    def _buffer(self, direction: str, shape: tuple, dtype: torch.dtype) -> list:
        key = (direction, shape, dtype)
        entry = self._buffers.get(key)
        if entry is None:
            entry = [torch.empty(shape, dtype=dtype, pin_memory=True), None]
            self._buffers[key] = entry
            while len(self._buffers) > self._max:
                _, (_, event) = self._buffers.popitem(last=False)
                if event is not None:
                    event.synchronize()  # never free memory a copy still reads
        else:
            self._buffers.move_to_end(key)
        return entry


def _recorded_event(device: torch.device) -> "torch.cuda.Event":
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty((), dtype=dtype).numpy().dtype
