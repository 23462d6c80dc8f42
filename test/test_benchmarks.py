"""The benchmark scripts still run and still measure something real (so they cannot rot).

Each script runs as a subprocess exactly as `make bench-model` / `make bench-node` /
`make bench-multi-camera` would start it, on the tiny model with few runs; the tests check the
exit code, the printed table and the JSON rows: finite timings and speed-ups, and our fp32 output
equal to transformers' to 1e-4.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def run_script(name: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], cwd=REPO, capture_output=True,
                            text=True, timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert result.returncode == 0, f"{name} exited with {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def table_rows(stdout: str, first_header: str, containing: str = "") -> tuple[list[str], list[list[str]]]:
    """Header cells and data rows of the first table whose header line starts with ``first_header``
    and contains ``containing`` (columns separated by two or more spaces)."""
    import re

    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header) and containing in line)
    split = lambda line: re.split(r"\s{2,}", line.strip())  # noqa: E731
    rows = []
    for line in lines[start + 2:]:  # skip the rule under the header
        if not line.strip():
            break
        rows.append(split(line))
    return split(lines[start]), rows


@pytest.mark.timeout(180)
def test_model_benchmark_quick_on_the_tiny_variant(tmp_path):
    out = tmp_path / "rows.json"
    result = run_script("model.py", "--variants", "dpt_tiny", "--quick", "--device", "cpu",
                        "--precisions", "fp32,bf16", "--json", str(out), timeout=170)

    headers, rows = table_rows(result.stdout, "variant")
    assert headers[:5] == ["variant", "task", "prec", "batch", "runs"]
    assert "theirs/ours" in headers and "max|diff|" in headers
    assert [(row[0], row[1], row[2], row[3]) for row in rows] == [
        ("dpt_tiny", "depth", "fp32", "1"), ("dpt_tiny", "depth", "bf16", "1")]
    ratio_column, diff_column = headers.index("theirs/ours"), headers.index("max|diff|")
    for row in rows:
        assert math.isfinite(float(row[ratio_column])) and float(row[ratio_column]) > 0
    fp32 = rows[0]
    assert float(fp32[diff_column]) <= 1e-4

    data = json.loads(out.read_text())
    assert data["environment"]["device"] == "cpu"
    by_precision = {row["precision"]: row for row in data["rows"]}
    assert set(by_precision) == {"fp32", "bf16"}
    for row in data["rows"]:
        assert len(row["ours_runs_ms"]) == len(row["theirs_runs_ms"]) == 3
        assert all(t > 0 for t in row["ours_runs_ms"] + row["theirs_runs_ms"])
        assert row["speedup"] == pytest.approx(row["theirs_p50_ms"] / row["ours_p50_ms"])
        # the comparison means something only when the outputs are O(1)
        assert row["max_abs_theirs"] > 0.1
    assert by_precision["fp32"]["max_abs_diff"] <= 1e-4
    # bf16 autocast changes the answer, but only at bf16's resolution (8 bits of mantissa)
    assert 0 < by_precision["bf16"]["max_abs_diff"] <= 0.05 * by_precision["bf16"]["max_abs_theirs"]
    # the MAC count (FlopCounterMode on meta) is a real, positive number for the tiny net at 384
    assert 0.5 < by_precision["fp32"]["gmac"] < 5
    assert {row["compile_mode"] for row in data["rows"]} == {"eager"}

    # second table: transformers' eager fp32 against ours at each precision
    headers, rows = table_rows(result.stdout, "variant", containing="theirs fp32/ours")
    assert [row[3] for row in rows] == ["fp32", "bf16"]
    ratio = headers.index("theirs fp32/ours")
    theirs_fp32 = by_precision["fp32"]["theirs_p50_ms"]
    for row in rows:
        expected = theirs_fp32 / by_precision[row[3]]["ours_p50_ms"]
        assert float(row[ratio]) == pytest.approx(expected, rel=0.01, abs=0.01)


@pytest.mark.timeout(180)
def test_model_benchmark_compares_depth_anything_with_transformers(tmp_path):
    """A Depth Anything V2 variant runs against transformers' DepthAnythingForDepthEstimation at its
    own network size (the tiny one's 70), both with the same weights: equal outputs."""
    out = tmp_path / "rows.json"
    result = run_script("model.py", "--variants", "depth_anything_v2_tiny", "--quick", "--device", "cpu",
                        "--precisions", "fp32", "--json", str(out), timeout=170)
    headers, rows = table_rows(result.stdout, "variant")
    assert [(row[0], row[2], row[headers.index("size")]) for row in rows] == [("depth_anything_v2_tiny", "fp32", "70")]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["size"] == 70 and row["max_abs_theirs"] > 0.1
    assert row["max_abs_diff"] <= 1e-5 * row["max_abs_theirs"]
    assert all(t > 0 for t in row["ours_runs_ms"] + row["theirs_runs_ms"]) and row["speedup"] > 0


@pytest.mark.ros
@pytest.mark.timeout(240)
def test_node_benchmark_quick(tmp_path):
    # marked ros: without the colcon install space make test fails (conftest), it never skips here
    out = tmp_path / "node.json"
    result = run_script("node.py", "--quick", "--device", "cpu", "--json", str(out), timeout=230)

    headers, rows = table_rows(result.stdout, "stage (ms)")
    assert headers == ["stage (ms)", "640x480 p50", "640x480 p99"]
    by_stage = {row[0]: row[1:] for row in rows}
    for stage in ("decode", "preprocess", "inference", "postprocess", "publish"):
        p50, p99 = (float(v) for v in by_stage[stage])
        assert 0 <= p50 <= p99
    e2e = [float(v) for v in by_stage["end-to-end (stamp -> last output received)"]]
    node_total = float(by_stage["node total (receive -> published)"][0])
    assert e2e[0] >= node_total > 0  # the outputs cannot arrive before the node published them
    share = by_stage["beyond-model / inference (p50s)"][0]
    assert share.endswith("%") and math.isfinite(float(share[:-1]))

    cloud_headers, cloud_rows = table_rows(result.stdout, "malloc")
    assert [row[0] for row in cloud_rows] == ["glibc default", "dpt_node tuning"]
    assert all(row[1] == "307200 x 20 B" and row[-1] == "yes" for row in cloud_rows)

    data = json.loads(out.read_text())
    frames = data["records"]["640x480"]
    assert len(frames) == 3
    for frame in frames:
        assert frame["outputs"] == len(data["topics"]) == 7  # every output of every frame arrived
        assert frame["network"] == "160x128"  # dpt_tiny's 128 network size at 4:3
    for run in data["cloud"]:
        assert len(run["stages_ms"]["total"]) == 20


@pytest.mark.ros
@pytest.mark.timeout(150)
def test_multi_camera_benchmark_quick(tmp_path):
    out = tmp_path / "multi.json"
    result = run_script("multi_camera.py", "--quick", "--cameras", "2", "--variant", "dpt_tiny", "--device", "cpu",
                        "--json", str(out), timeout=140)

    headers, rows = table_rows(result.stdout, "configuration")
    assert headers[:4] == ["configuration", "nodes", "frames", "frames/s"]
    assert [(row[0], row[1]) for row in rows] == [("batched (1 node, 2 cameras)", "1"),
                                                   ("separate (2 nodes, 1 camera each)", "2")]
    data = json.loads(out.read_text())
    results = data["results"]
    assert data["cameras"] == ["cam0", "cam1"] and data["topics"] == ["depth/image"]
    for name, row in zip(("batched", "separate"), rows):
        run = results[name]
        assert all(count > 0 for count in run["frames_per_camera"].values()), (name, run)
        assert run["frames"] == sum(run["frames_per_camera"].values()) == int(row[2])
        assert math.isfinite(run["throughput_fps"]) and run["throughput_fps"] > 0
        assert run["throughput_fps"] == pytest.approx(run["frames"] / data["args"]["seconds"])
        # the batch sizes cover exactly the counted frames
        assert sum(run["batch_sizes"].values()) == run["frames"]

    printed = next(line for line in result.stdout.splitlines() if line.startswith("batched / separate throughput:"))
    ratio = float(printed.split(":")[1])
    assert data["ratio"] == pytest.approx(results["batched"]["throughput_fps"] / results["separate"]["throughput_fps"])
    assert ratio == pytest.approx(data["ratio"], abs=0.005)  # printed with two decimals

    # The cameras publish together, faster than the node runs, so a frame of each camera waits
    # whenever the batched node becomes free and it batches both together; one node per camera
    # never can.
    batched_sizes = {int(size) for size in results["batched"]["batch_sizes"]}
    assert max(batched_sizes) == 2 and batched_sizes <= {1, 2}
    assert set(results["separate"]["batch_sizes"]) == {"1"}
