"""The benchmark scripts still run and still measure something real (so they cannot rot).

Each script runs as a subprocess exactly as `make bench-model` / `make bench-node` /
`make bench-multi-camera` / `make bench-alignment` / `make bench-fleet` would start it, on the tiny model with few runs; the tests check the
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


@pytest.mark.timeout(120)
def test_alignment_benchmark_quick(tmp_path):
    out = tmp_path / "alignment.json"
    # glibc's default malloc: dpt_node's tuning would import the ROS node module.
    result = run_script("alignment.py", "--quick", "--malloc", "default", "--json", str(out), timeout=110)

    headers, rows = table_rows(result.stdout, "samples")
    assert headers[:4] == ["samples", "used", "inliers", "aligner p50 ms"]
    assert "aligner/least sq." in headers and "p50/2 ms target" in headers
    assert [(row[0], row[1]) for row in rows] == [("2000", "2000"), ("30000", "4096")]  # cut to max_samples

    data = json.loads(out.read_text())
    for row in data["aligner"]:
        assert row["state"] == "TRACKING"
        assert len(row["aligner_ms"]) == len(row["least_squares_ms"]) == 20
        assert all(t > 0 for t in row["aligner_ms"] + row["least_squares_ms"])
        assert row["ratio"] == pytest.approx(row["aligner_p50_ms"] / row["least_squares_p50_ms"])
        # The timed work found the answer, which plain least squares on the same samples misses.
        assert abs(row["scale_error"]) < 0.01 and abs(row["shift_error"]) < 0.01
        assert abs(row["plain_scale_error"]) > 0.05
        # 30 % of the samples are planted outliers.
        assert 0.65 * row["used"] <= row["inliers"] <= 0.72 * row["used"]

    headers, rows = table_rows(result.stdout, "sample source")
    assert headers == ["sample source (per message)", "samples", "available", "p50 ms", "p90 ms", "x reference"]
    assert [row[0] for row in rows] == ["registered 16UC1 depth image", "reprojected 16UC1 depth image",
                                        "lidar PointCloud2, 100000 points", "reference: relative_to_metric 640x480"]
    by_source = {row["source"]: row for row in data["extraction"]}
    # Read on every 8th row and column (4800 pixels) of which 80 % are valid: all of them are kept.
    registered = by_source["registered 16UC1 depth image"]
    assert registered["samples"] == registered["available"] and 3700 < registered["samples"] < 3950
    # A 63-degree-wide view sees about a sixth of a 360-degree scan (the +-15 degree beams all fit its height).
    lidar = by_source["lidar PointCloud2, 100000 points"]
    assert lidar["samples"] == 4096 and 10_000 < lidar["available"] < 25_000
    assert rows[-1][-1] == "1.00"

    headers, rows = table_rows(result.stdout, "transform 100000 points")
    assert [row[0] for row in rows] == ["quiet", "2 busy processes"]
    for row in data["transform"]:
        assert row["max_abs_diff"] < 1e-9  # the same points either way
        assert row["ratio"] == pytest.approx(row["matmul_p50_ms"] / row["per_coordinate_p50_ms"])

@pytest.mark.timeout(420)
def test_engine_benchmark_quick_on_the_tiny_variant(tmp_path):
    out = tmp_path / "engine.json"
    result = run_script("engine.py", "--quick", "--device", "cpu", "--variants", "dpt_tiny", "--precisions", "fp32",
                        "--compile", "eager,cuda_graph", "--cameras", "2", "--json", str(out), timeout=400)
    headers, rows = table_rows(result.stdout, "variant", containing="pipeline p50")
    assert headers[:4] == ["variant", "tasks", "prec", "compile"]
    assert [(row[0], row[1], row[2], row[3]) for row in rows] == [
        ("dpt_tiny", "depth+segmentation", "fp32", "eager"),
        ("dpt_tiny", "depth+segmentation", "fp32", "cuda_graph -> eager")]  # no CUDA here: the node's fallback
    data = json.loads(out.read_text())
    assert [row["ran"] for row in data["rows"]] == ["eager", "cuda_graph -> eager"]
    assert data["rows"][0]["compile"] == "eager" and "cuda_graph needs a CUDA device" in data["rows"][1]["compile"]
    for row in data["rows"]:
        assert 0 < row["engine_p50_ms"] <= row["engine_p90_ms"] and 0 < row["pipeline_p50_ms"] <= row["pipeline_p90_ms"]
        assert set(row["stages_p50_ms"]) == {"preprocess", "inference", "postprocess"}
        assert all(value > 0 for value in row["stages_p50_ms"].values())
        assert math.isfinite(row["batched_fps"]) and math.isfinite(row["separate_fps"]) and row["separate_fps"] > 0
    batch_headers, batch_rows = table_rows(result.stdout, "variant", containing="batched / separate")
    ratio = batch_headers.index("batched / separate")
    for row, data_row in zip(batch_rows, data["rows"]):
        assert float(row[ratio]) == pytest.approx(data_row["batched_fps"] / data_row["separate_fps"], abs=0.01)


def test_benchmarks_take_their_variants_from_the_model_registry():
    """`--variants all` is dpt_ros.model.VARIANTS in both benchmarks gpu_check runs: a variant added
    there is benchmarked without touching the scripts."""
    import importlib.util

    from dpt_ros.model import VARIANTS

    sys.path.insert(0, str(BENCHMARKS))
    try:
        for name in ("engine", "model"):
            spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up there
            spec.loader.exec_module(module)
            args = module.parse_args(["--variants", "all", "--device", "cpu", "--compile", "eager,cuda_graph"])
            assert args.variants == list(VARIANTS) and args.compile == ["eager", "cuda_graph"]
            with pytest.raises(SystemExit):
                module.parse_args(["--device", "cpu", "--compile", "eager,tensorrt"])
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.slow  # Ray's and the workers' start-up
@pytest.mark.timeout(240)
def test_fleet_benchmark_quick(tmp_path):
    out = tmp_path / "fleet.json"
    result = run_script("fleet.py", "--quick", "--json", str(out), timeout=230)

    headers, rows = table_rows(result.stdout, "configuration")
    assert headers[:4] == ["configuration", "frames", "start-up s", "evaluating s"]
    assert [row[0] for row in rows] == ["sequential (1 process, 1 torch thread)", "ray (2 workers, 1 thread each)"]
    assert [row[1] for row in rows] == ["12", "12"]  # 2 bags x 6 frames, all evaluated both ways
    data = json.loads(out.read_text())
    sequential, fleet = data["sequential"]["1"], data["fleet"]
    for result_ in (sequential, fleet):
        assert result_["fps_evaluating"] == pytest.approx(result_["frames"] / result_["evaluating_s"])
        assert 0 < result_["frame_loop_s_per_bag"] < result_["s_per_bag"]
    assert data["ratios"]["1"]["evaluating"] == pytest.approx(fleet["fps_evaluating"] / sequential["fps_evaluating"])
    printed = next(line for line in result.stdout.splitlines() if line.startswith("ray / sequential (1 thread)"))
    assert f"evaluating {data['ratios']['1']['evaluating']:.2f}" in printed
    # Ray's start-up and overhead are measured, and its processes' CPU time is told apart from the workers'.
    assert fleet["ray_start_s"] > 0 and fleet["workers_ready_s"] > 0 and fleet["ray_overhead_per_bag_s"] >= 0
    assert fleet["cpu_s"]["workers"] > 0 and fleet["cpu_s"]["ray system"] > 0
