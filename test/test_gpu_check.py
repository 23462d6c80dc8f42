"""benchmarks/gpu_check.sh: argument handling, and its steps, budget and verdict with a stand-in interpreter.

The real rehearsal (``benchmarks/gpu_check.sh OUT --device cpu --quick``) runs the tiny model
through every benchmark and takes minutes on this machine; here a stand-in ``PYTHON`` records the
commands the script would run and answers as told, so the script's own logic is checked in seconds.
"""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"

STAND_IN = """#!/usr/bin/env bash
# Stands in for python3: records its arguments, fails where told to.
echo "$*" >> "$CALLS"
case "$1" in
  -c) exit 0 ;;
  -) case "$(cat)" in
       *backbones*) echo "dpt_large,depth_anything_v2_vits" ;;  # the variant list of a full check
       *) echo "# python stand-in" ;;
     esac; exit 0 ;;
  -m) echo "pytest stand-in: $*"; exit "${PYTEST_RC:-0}" ;;
  benchmarks/model.py) echo "model stand-in"; exit "${MODEL_RC:-0}" ;;
  benchmarks/engine.py) echo "engine stand-in"; exit 0 ;;
esac
exit 9
"""


def run(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


@pytest.fixture
def stand_in(tmp_path):
    path = tmp_path / "python"
    path.write_text(STAND_IN)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    return {"PYTHON": str(path), "CALLS": str(calls)}, calls


@pytest.mark.parametrize("args, message", [
    ((), "give the folder for the tables"),
    (("OUT", "--device", "tpu"), "--device must be cuda or cpu, got 'tpu'"),
    (("OUT", "--budget-s", "soon"), "--budget-s must be a whole number of seconds, got 'soon'"),
    (("OUT", "--budget-s", "30"), "--budget-s must be at least 60"),
    (("OUT", "--fast"), "unknown option '--fast'"),
    (("OUT", "OTHER"), "one output folder only"),
    (("OUT", "--device"), "--device needs a value"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, message):
    args = tuple(str(tmp_path / a) if a in ("OUT", "OTHER") else a for a in args)
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"gpu_check: {result.stderr.strip()[len('gpu_check: '):]}"]
    assert message in result.stderr


def test_help_describes_the_script():
    result = run("--help")
    assert result.returncode == 0
    assert "--device cpu --quick" in result.stdout and "dpt_ros.model.VARIANTS" in result.stdout


def test_environment_problems_exit_2(tmp_path, stand_in):
    result = run(str(tmp_path / "out"), env={"PYTHON": str(tmp_path / "no-such-python")})
    assert result.returncode == 2 and "no '" in result.stderr
    unwritable = tmp_path / "file"
    unwritable.write_text("")
    result = run(str(unwritable / "out"), "--device", "cpu")
    assert result.returncode == 2 and "cannot write to" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_requested_without_cuda_is_refused_before_any_step(tmp_path):
    result = run(str(tmp_path / "out"), timeout=300)  # the real python3 imports torch and transformers
    assert result.returncode == 2 and "torch.cuda.is_available() is False" in result.stderr
    assert not (tmp_path / "out" / "summary.txt").exists()


def test_quick_rehearsal_runs_each_step_on_the_tiny_model(tmp_path, stand_in):
    env, calls = stand_in
    out = tmp_path / "tables"
    result = run(str(out), "--device", "cpu", "--quick", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (out / "summary.txt").read_text()
    for step in ("tests", "model", "engine"):
        assert any(line.split()[:1] == [step] and line.rstrip().endswith("ok") for line in summary.splitlines()), summary
    assert "model_compile    not run (--quick without --with-compile)" in summary
    assert summary.rstrip().endswith(f"ok; tables in {out}")
    recorded = calls.read_text().splitlines()
    model = next(line for line in recorded if line.startswith("benchmarks/model.py"))
    assert "--device cpu --variants dpt_tiny --precisions fp32 --batches 1 --quick --compile eager,cuda_graph" in model
    engine = next(line for line in recorded if line.startswith("benchmarks/engine.py"))
    assert "--variants dpt_tiny" in engine and "--cameras 2" in engine and "--json" not in engine
    assert any("test_bilinear_argmax.py" in line for line in recorded if line.startswith("-m pytest"))
    assert (out / "model.txt").read_text().strip() == "model stand-in"


def test_full_check_covers_every_variant_precision_and_mode(tmp_path, stand_in):
    env, calls = stand_in
    result = run(str(tmp_path / "t"), "--device", "cpu", "--json", env=env)  # cpu: the same steps as on cuda
    assert result.returncode == 0, result.stdout + result.stderr
    recorded = [line for line in calls.read_text().splitlines() if line.startswith("benchmarks/")]
    assert [line.split()[0] for line in recorded] == ["benchmarks/model.py", "benchmarks/engine.py",
                                                     "benchmarks/model.py", "benchmarks/engine.py"]
    for line in recorded:  # the variant list the interpreter printed (one per network, below)
        assert "--variants dpt_large,depth_anything_v2_vits --precisions fp32,bf16" in line and "--json" in line
    assert "--compile eager,cuda_graph" in recorded[0] and "--compile eager,cuda_graph" in recorded[1]
    assert "--compile torch_compile" in recorded[2] and "--compile torch_compile" in recorded[3]
    assert "--cameras 4" in recorded[1] and recorded[3].rstrip().split("--cameras")[-1].split()[0] == "0"


def test_a_failing_step_fails_the_check_and_the_others_still_run(tmp_path, stand_in):
    env, _ = stand_in
    out = tmp_path / "t"
    result = run(str(out), "--device", "cpu", "--quick", env=dict(env, MODEL_RC="1"))
    assert result.returncode == 1
    summary = (out / "summary.txt").read_text()
    assert "FAILED (exit 1; see model.txt)" in summary
    assert any(line.startswith("engine ") and line.rstrip().endswith("ok") for line in summary.splitlines())
    assert summary.rstrip().endswith(f"FAILED; tables in {out}")


def test_the_full_check_takes_one_variant_per_network_from_the_registry():
    """The script's own variant listing, run by this interpreter: every backbone of the registry
    once (the metric fine-tunings share their relative twin's), the test-only tiny ones left out."""
    from dpt_ros.model import VARIANTS

    script = SCRIPT.read_text()
    listing = script[script.index("VARIANTS=$(\"$PY\" - <<'EOF'\n") :].split("\n", 1)[1].split("\nEOF\n")[0]
    printed = subprocess.run(["python", "-"], input=listing, capture_output=True, text=True, check=True,
                             env=dict(os.environ, PYTHONPATH=str(REPO))).stdout.strip().split(",")
    assert printed == ["dpt_large", "dpt_hybrid", "dpt_base", "depth_anything_v2_vits", "depth_anything_v2_vitb",
                       "depth_anything_v2_vitl"]
    backbones = {spec.backbone for name, spec in VARIANTS.items() if not name.endswith("_tiny")}
    assert len({VARIANTS[name].backbone for name in printed}) == len(printed) == len(backbones)
