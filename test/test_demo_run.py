"""The README's main command, `make demo`, on the tiny model: every output kind lands on disk."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]


def test_demo_writes_depth_labels_cloud_and_stats(tmp_path):
    output = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "dpt_ros.demo_run", "--variant", "dpt_tiny", "--segmentation-variant", "dpt_tiny",
         "--device", "cpu", "--width", "160", "--height", "120", "--rate", "4", "--input-size", "64",
         "--depth-scale", "1e-6", "--depth-shift", "0.25", "--duration", "8", "--startup-timeout", "150",
         "--output", str(output)],
        capture_output=True, text=True, timeout=200, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RANDOM weights" in result.stdout  # dpt_tiny has no official checkpoint: said loudly
    summaries = [line for line in result.stdout.splitlines() if " processed, " in line]
    assert len(summaries) >= 5  # about one line per second, for --duration after the first frame

    depth = np.load(output / "depth.npy")
    assert depth.shape == (120, 160) and np.nanmax(depth) == pytest.approx(4.0, rel=1e-3)
    assert (output / "relative.npy").exists() and (output / "labels.png").exists()
    header = (output / "cloud.ply").read_bytes()[:300].decode("ascii", "replace")
    assert "element vertex 19200" in header  # 160x120, all finite at ~4 m
    stats = [json.loads(line) for line in (output / "stats.jsonl").read_text().splitlines()]
    assert stats and stats[-1]["model_variant"] == "dpt_tiny" and stats[-1]["frames_processed"] >= 1
    labels = json.loads((output / "label_info.json").read_text())
    assert len(labels["classes"]) == 150 and labels["ignore_id"] == 255
    # Issue 10, finding 4: demo_camera published the image before its camera_info and the node
    # warned "no camera_info within stamp_tolerance" every 5 s; now every frame pairs by stamp.
    node_log = (output / "logs" / "dpt_node.log").read_text()
    assert "no camera_info" not in node_log and "ERROR" not in node_log, node_log


def test_demo_runs_a_metric_depth_anything_variant(tmp_path):
    """make demo DEMO_ARGS="--variant depth_anything_v2_metric_hypersim_vits ...": metres straight from
    the model (no --depth-scale), so depth/image and the cloud are recorded."""
    output = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "dpt_ros.demo_run", "--variant", "depth_anything_v2_metric_hypersim_vits",
         "--tasks", "depth", "--weights", "", "--device", "cpu", "--width", "160", "--height", "120", "--rate", "4",
         "--input-size", "70", "--duration", "30", "--output", str(output)],
        capture_output=True, text=True, timeout=200, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RANDOM weights" in result.stdout and "--depth-scale" not in result.stdout
    depth = np.load(output / "depth.npy")
    assert depth.shape == (120, 160) and np.isfinite(depth).all()
    assert 0 < depth.min() and depth.max() < 20.0  # Hypersim's sigmoid head: metres below 20
    header = (output / "cloud.ply").read_bytes()[:300].decode("ascii", "replace")
    assert "element vertex 19200" in header
    stats = [json.loads(line) for line in (output / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["model_variant"] == "depth_anything_v2_metric_hypersim_vits"
    # lower bound 70: 120x160 scales by 70/120 to 70 x 93.3, the width to the nearest multiple of 14
    assert (stats[-1]["network_height"], stats[-1]["network_width"]) == (70, 98)


def test_the_cpu_network_size_fits_every_model_of_the_run():
    from dpt_ros.demo_run import cpu_network_size

    assert cpu_network_size(["dpt_hybrid_nyu", "dpt_hybrid"], ("depth", "segmentation")) == 256
    assert cpu_network_size(["depth_anything_v2_metric_hypersim_vits"], ("depth",)) == 252
    assert cpu_network_size(["depth_anything_v2_vits", "dpt_hybrid"], ("depth", "segmentation")) == 224
