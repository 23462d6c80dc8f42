"""host_transfer.HostStaging: no extra copies on a CPU; reused page-locked buffers per shape on a GPU."""
import numpy as np
import pytest
import torch

from dpt_ros.host_transfer import HostStaging

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cpu_uploads_and_downloads_copy_nothing():
    staging = HostStaging(torch.device("cpu"))
    array = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    tensor = staging.upload(array)
    assert tensor.device.type == "cpu" and np.shares_memory(tensor.numpy(), array)
    host = staging.to_host(tensor)
    assert np.shares_memory(host, array)
    flipped = array[:, ::-1]  # a view with negative strides is made contiguous first
    np.testing.assert_array_equal(staging.upload(flipped).numpy(), flipped)
    out = np.zeros((2, 4, 3), np.uint8)
    staging.copy_into(tensor, out)
    np.testing.assert_array_equal(out, array)
    assert staging.buffers == 0


@needs_cuda
def test_cuda_round_trip_reuses_one_pinned_buffer_per_shape_and_direction():
    staging = HostStaging(torch.device("cuda"))
    frames = [np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8) for seed in range(5)]
    downloads = []
    for frame in frames:
        on_device = staging.upload(frame)
        assert on_device.device.type == "cuda"
        downloads.append(staging.to_host(on_device.float() * 2))
    assert staging.buffers == 2  # one upload and one download buffer, reused by every frame
    for frame, download in zip(frames, downloads):  # each result is the caller's own, not the buffer
        np.testing.assert_array_equal(download, frame.astype(np.float32) * 2)
    out = np.empty((48, 64, 3), np.uint8)
    staging.copy_into(torch.full((48, 64, 3), 7, dtype=torch.uint8, device="cuda"), out)
    assert (out == 7).all() and staging.buffers == 3


@needs_cuda
def test_cuda_buffers_are_bounded_and_uploads_never_overwrite_a_copy_in_flight():
    staging = HostStaging(torch.device("cuda"), max_buffers=3)
    for side in range(8, 20):
        staging.to_host(torch.zeros(side, side, device="cuda"))
    assert staging.buffers == 3
    big = [np.full((1024, 1024), value, np.float32) for value in range(4)]
    uploaded = [staging.upload(array) for array in big]  # back to back through one buffer
    assert [float(t.mean()) for t in uploaded] == [0.0, 1.0, 2.0, 3.0]
