"""evaluate_bags on Ray: bags evaluated in parallel by workers that each hold one model.

Ray's start-up is slow on a small machine (10-40 s, and each worker process imports torch), so
the module starts one Ray cluster (`ray start --head`, 2 CPUs, as a user would on a head machine)
that the in-process runs join with --ray-address, and runs the installed executable once as a
process with its embedded local Ray, which a real SIGINT interrupts.  The dpt_tiny model runs with
seeded checkpoints, so every process computes the same network.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from dpt_ros.evaluation import cli, fleet_cli
from dpt_ros.evaluation.fleet import prepared_template
from dpt_ros.evaluation.fleet_inputs import BagInput, fingerprint
from dpt_ros.evaluation.manifest import DONE, FAILED, INTERRUPTED, Manifest, configuration_hash, plan
from dpt_ros.evaluation.metrics import DEPTH_METRIC_NAMES, PIXEL_TERMS
from support.bags import IMAGE_TOPIC, read_bag, write_bag, write_tiny_checkpoints
from support.interrupt import interrupt_when

REPO = Path(__file__).resolve().parent.parent
EXECUTABLE = REPO / "install" / "dpt_ros" / "lib" / "dpt_ros" / "evaluate_bags"
pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]  # Ray start-up: out of `make test-fast`


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return write_tiny_checkpoints(tmp_path_factory.mktemp("weights"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-machine Ray cluster started as a user starts a head node; yields its address."""
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="dpt_ray_head_")  # short: Ray's socket paths must fit 107 bytes
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={port}",
         "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp_dir}", "--object-store-memory=100000000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        # Without token authentication: `ray start` turns it on where ~/.ray/auth_token exists
        # (an earlier local Ray writes one), which would make the tests depend on their order.
        env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled"))
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(head.stdout), daemon=True).start()
    deadline = time.monotonic() + 240
    try:
        while not any("Ray runtime started" in line for line in output):
            assert head.poll() is None, "".join(output)
            assert time.monotonic() < deadline, "".join(output)
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def tiny_options(checkpoints, *extra):
    """dpt_tiny with seeded weights, metric depth through --depth-scale/--depth-shift, depth and
    labels scored against the bags' ground truth."""
    return ["--image-topic", IMAGE_TOPIC, "--camera-info-topic", "/camera/camera_info", "--gt-depth-topic",
            "/gt/depth", "--gt-labels-topic", "/gt/labels", "--variant", "dpt_tiny", "--weights",
            str(checkpoints[0]), "--segmentation-weights", str(checkpoints[1]), "--depth-scale", "0.05",
            "--depth-shift", "0.1", "--device", "cpu", *extra]


def run_fleet(capsys, *args) -> tuple[int, str]:
    code = fleet_cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


def corrupt(bag: Path) -> Path:
    db3 = next(bag.glob("*.db3"))
    db3.write_bytes(b"\x13" * db3.stat().st_size)
    return bag


def reference_report(tmp_path, bag, checkpoints) -> tuple[dict, Path]:
    """What evaluate_bag writes for ``bag``, run in this process with one torch thread, as a
    worker with one CPU runs (more threads sum in another order: the last bits would differ)."""
    out = tmp_path / "reference" / bag.name
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = cli.main([str(bag), *tiny_options(checkpoints), "--no-progress", "--report-dir", str(out),
                         "--output-bag", str(out / "output_bag")])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return json.loads((out / "report.json").read_text()), out / "output_bag"


def report_of(out: Path, name: str) -> dict:
    return json.loads((out / name / "report.json").read_text())


# ------------------------------------------------------------------------------------------------
# Three bags, one corrupt
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def first_run(tmp_path_factory, ray_cluster, checkpoints):
    """Bags a (mcap, 3 frames), b (sqlite3, 4 frames) and c (corrupt .db3), evaluated by 2 workers."""
    root = tmp_path_factory.mktemp("fleet")
    bags = root / "bags"
    write_bag(bags / "a", "mcap", 3)
    write_bag(bags / "b", "sqlite3", 4)
    corrupt(write_bag(bags / "c", "sqlite3", 2))
    out = root / "out"
    code = fleet_cli.main([str(bags), "--output-dir", str(out), "--ray-address", ray_cluster, "--workers", "2",
                           *tiny_options(checkpoints)])
    return root, out, code


def test_each_bag_gets_what_evaluate_bag_writes_and_a_corrupt_one_fails_alone(first_run, checkpoints, tmp_path):
    root, out, code = first_run
    assert code == 3  # finished, with a failed bag
    for name in ("a", "b"):
        ours = report_of(out, name)
        reference, reference_bag = reference_report(tmp_path, root / "bags" / name, checkpoints)
        for key in ("outcome", "counts", "depth", "depth_pixel_weighted", "segmentation", "sums",
                    "depth_error_histogram", "alignment", "depth_output_kind", "output_topics"):
            assert ours[key] == reference[key], (name, key)
        assert ours["configuration"]["input_bag"] == str(root / "bags" / name)
        assert ours["configuration"]["output_bag"] == str(out / name / "output_bag")
        # The output bag holds the same messages, byte for byte.
        ours_bag, ours_topics = read_bag(out / name / "output_bag")
        theirs_bag, theirs_topics = read_bag(reference_bag)
        assert ours_topics == theirs_topics
        for topic in ("/dpt/depth/image", "/dpt/depth/relative", "/dpt/segmentation/labels", "/dpt/points"):
            assert [(t, m.data.tobytes()) for t, m in ours_bag[topic]] == \
                [(t, m.data.tobytes()) for t, m in theirs_bag[topic]], (name, topic)
        for plot in ("report.md", "samples.png", "error_vs_depth.png", "confusion_matrix.png"):
            assert (out / name / plot).stat().st_size > 0
    assert not (out / "c" / "report.json").exists()

    fleet = json.loads((out / "report.json").read_text())
    assert fleet["bags"] == {"total": 3, "done": 2, "failed": 1, "interrupted": 0, "not_started": 0,
                             "evaluated_now": 3, "done_before": 0}
    assert fleet["failures"] == [{"name": "c", "bag": str(root / "bags" / "c"),
                                  "reason": fleet["failures"][0]["reason"]}]
    assert fleet["failures"][0]["reason"].startswith(f"cannot read input bag {root / 'bags' / 'c'} (sqlite3)")
    assert fleet["per_bag"][-1]["name"] == "c" and fleet["per_bag"][-1]["state"] == FAILED
    assert fleet["ray"]["workers"] == 2 and fleet["ray"]["where"].startswith("the Ray cluster at")
    manifest = Manifest.load(out)
    assert {path.name: entry.state for path, entry in manifest.entries.items()} == \
        {"a": DONE, "b": DONE, "c": FAILED}
    for plot in ("report.md", "bags_abs_rel.png", "bags_mean_iou.png", "error_vs_depth.png", "confusion_matrix.png"):
        assert (out / plot).stat().st_size > 0
    assert "| `c` (" in (out / "report.md").read_text()


def test_fleet_metrics_are_the_per_bag_sums_added_up(first_run):
    """Computed here by hand from report.json's sums: frame-weighted means are the per-frame
    metrics summed over all frames of all bags over the frame count; pixel-weighted ones the
    per-pixel terms summed over all pixels over the pixel count (square roots for the RMSEs)."""
    _, out, _ = first_run
    fleet = json.loads((out / "report.json").read_text())
    sums = [report_of(out, name)["sums"] for name in ("a", "b")]
    frames = sum(s["depth"]["frames"] for s in sums)
    pixels = sum(s["depth"]["pixels"] for s in sums)
    assert frames == 7 and fleet["depth_pixel_weighted"]["valid_pixels"] == pixels
    for name in DEPTH_METRIC_NAMES:
        assert fleet["depth"][name] == pytest.approx(sum(s["depth"]["frame_sums"][name] for s in sums) / frames,
                                                     rel=1e-12), name
    pixel_sum = {term: sum(s["depth"]["pixel_sums"][term] for s in sums) for term in PIXEL_TERMS}
    weighted = fleet["depth_pixel_weighted"]
    assert weighted["abs_rel"] == pytest.approx(pixel_sum["abs_rel"] / pixels, rel=1e-12)
    assert weighted["rmse"] == pytest.approx((pixel_sum["squared_error"] / pixels) ** 0.5, rel=1e-12)
    assert weighted["rmse_log"] == pytest.approx((pixel_sum["squared_log_error"] / pixels) ** 0.5, rel=1e-12)
    assert weighted["delta1"] == pytest.approx(pixel_sum["delta1"] / pixels, rel=1e-12)
    # Segmentation: one confusion matrix over both bags.
    matrix = {}
    for s in sums:
        for gt, pred, count in s["confusion_matrix"]["entries_gt_pred_count"]:
            matrix[gt, pred] = matrix.get((gt, pred), 0) + count
    unpredicted = sum(sum(s["confusion_matrix"]["unpredicted"]) for s in sums)
    total = sum(matrix.values()) + unpredicted
    correct = sum(count for (gt, pred), count in matrix.items() if gt == pred)
    assert fleet["segmentation"]["evaluated_pixels"] == total
    assert fleet["segmentation"]["pixel_accuracy"] == pytest.approx(correct / total, rel=1e-12)
    # The worst bag (highest AbsRel) first.
    abs_rel = {name: report_of(out, name)["depth"]["abs_rel"] for name in ("a", "b")}
    assert [row["name"] for row in fleet["per_bag"][:2]] == sorted(abs_rel, key=lambda n: -abs_rel[n])


def test_a_rerun_skips_what_is_done_and_a_changed_option_redoes_every_bag(first_run, ray_cluster, checkpoints,
                                                                           capsys):
    root, out, _ = first_run
    bags = root / "bags"
    written = {name: (out / name / "report.json").stat().st_mtime_ns for name in ("a", "b")}
    args = [bags, "--output-dir", out, "--ray-address", ray_cluster, *tiny_options(checkpoints)]
    # The same options: a and b are skipped, the failed c is tried again (and fails again, in this
    # process: a bag that cannot be read takes no worker, so no worker is started at all).
    code, err = run_fleet(capsys, *args)
    assert code == 3, err
    assert "3 bags (2 done before, 1 failed before): 1 to evaluate, 2 skipped" in err
    assert "[1/1] c: FAILED: cannot read input bag" in err and "worker" not in err
    assert {name: (out / name / "report.json").stat().st_mtime_ns for name in ("a", "b")} == written
    assert json.loads((out / "report.json").read_text())["bags"]["done_before"] == 2

    # c recorded again (a good bag now) and another option: every bag is evaluated, with it.
    shutil.rmtree(bags / "c")
    write_bag(bags / "c", "sqlite3", 2)
    code, err = run_fleet(capsys, *args, "--max-depth", "9")
    assert code == 0, err
    assert "3 bags (2 evaluated with other options, 1 failed before): 3 to evaluate" in err
    for name in ("a", "b", "c"):
        assert report_of(out, name)["configuration"]["max_depth"] == 9.0
    assert len({entry.configuration_hash for entry in Manifest.load(out).entries.values()}) == 1
    fleet = json.loads((out / "report.json").read_text())
    assert fleet["bags"]["done"] == 3 and fleet["bags"]["evaluated_now"] == 3 and fleet["failures"] == []
    assert fleet["counts"]["processed"] == 3 + 4 + 2

    # The same again: nothing to do, no worker started, the same fleet report.
    written = {name: (out / name / "report.json").stat().st_mtime_ns for name in ("a", "b", "c")}
    code, err = run_fleet(capsys, *args, "--max-depth", "9")
    assert code == 0, err
    assert "3 bags (3 done before): 0 to evaluate, 3 skipped" in err and "worker" not in err
    assert {name: (out / name / "report.json").stat().st_mtime_ns for name in ("a", "b", "c")} == written
    again = json.loads((out / "report.json").read_text())
    assert again["depth"] == fleet["depth"] and again["bags"]["done_before"] == 3


def test_a_cluster_without_room_for_a_worker_is_refused(first_run, ray_cluster, capsys):
    root, out, _ = first_run
    new_bag = write_bag(root / "more" / "d", "mcap", 1)
    code, err = run_fleet(capsys, new_bag, "--output-dir", root / "out_gpu", "--image-topic", IMAGE_TOPIC,
                          "--ray-address", ray_cluster, "--gpus-per-worker", "1")
    assert code == 2, err
    assert "has no room for one worker with 1 CPUs and 1 GPUs" in err
    code, err = run_fleet(capsys, new_bag, "--output-dir", root / "out_gpu", "--image-topic", IMAGE_TOPIC,
                          "--ray-address", ray_cluster, "--device", "cuda")
    assert code == 2 and "--device cuda, but the Ray cluster at" in err and "has no GPU" in err
    code, err = run_fleet(capsys, new_bag, "--output-dir", root / "out_gpu", "--image-topic", IMAGE_TOPIC,
                          "--ray-address", f"127.0.0.1:{_free_port()}")
    assert code == 2 and "nothing answers there" in err
    assert not Manifest.load(root / "out_gpu").entries  # no bag was started


def test_a_model_no_worker_can_load_is_refused_before_any_bag(first_run, ray_cluster, capsys):
    root, _, _ = first_run
    code, err = run_fleet(capsys, root / "bags" / "a", "--output-dir", root / "out_no_model", "--image-topic",
                          IMAGE_TOPIC, "--variant", "dpt_tiny", "--weights", "/nonexistent/dpt_tiny.pt",
                          "--device", "cpu", "--ray-address", ray_cluster)
    assert code == 2, err
    assert "evaluate_bags: error: no worker could load the model:" in err and "/nonexistent/dpt_tiny.pt" in err
    assert not Manifest.load(root / "out_no_model").entries


# ------------------------------------------------------------------------------------------------
# Ctrl-C: the installed executable with its embedded Ray, interrupted by a real SIGINT
# ------------------------------------------------------------------------------------------------

def test_sigint_keeps_finished_bags_and_a_manifest_a_rerun_trusts(tmp_path, checkpoints):
    bags = tmp_path / "bags"
    # One worker takes them longest first; mid is long enough (~4 s) not to end before the SIGINT.
    frames = {"big": 120, "mid": 119, "small": 5}
    for name, count in frames.items():
        write_bag(bags / name, "mcap", count)
    out = tmp_path / "out"
    options = ["--image-topic", IMAGE_TOPIC, "--gt-depth-topic", "/gt/depth", "--variant", "dpt_tiny",
               "--weights", str(checkpoints[0]), "--depth-scale", "0.05", "--depth-shift", "0.1", "--device", "cpu"]
    process = subprocess.Popen([str(EXECUTABLE), str(bags), "--output-dir", str(out), "--workers", "1", *options],
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)

    def mid_started(stderr: str) -> bool:  # "[1/3] big: done", then the bar 2 frames into "mid"
        if "[1/3] big: done" not in stderr:
            return False
        counts = re.findall(r"(\d+)/\d+ \[", stderr.split("[1/3] big: done", 1)[1])
        return bool(counts) and int(counts[-1]) >= frames["big"] + 2

    code, text = interrupt_when(process, mid_started, timeout_s=400, exit_timeout_s=120)
    assert code == 130, text
    assert "stopping: no new bag is started" in text
    assert "mid: interrupted after" in text and "small:" not in text, text

    manifest = Manifest.load(out)
    assert {path.name: entry.state for path, entry in manifest.entries.items()} == {"big": DONE, "mid": INTERRUPTED}
    big = report_of(out, "big")
    assert big["outcome"] == "complete" and big["counts"]["processed"] == frames["big"]
    mid = report_of(out, "mid")  # closed cleanly: a valid partial report and output bag
    assert mid["interrupted"] is True and 2 <= mid["counts"]["processed"] < frames["mid"]
    messages, _ = read_bag(out / "mid" / "output_bag")
    assert len(messages["/dpt/depth/image"]) == mid["counts"]["processed"]
    fleet = json.loads((out / "report.json").read_text())
    assert fleet["interrupted"] is True
    assert (fleet["bags"]["done"], fleet["bags"]["interrupted"], fleet["bags"]["not_started"]) == (1, 1, 1)
    assert fleet["counts"]["processed"] == frames["big"]  # only done bags count

    # What the next run with the same options will do: skip big, evaluate mid and small.
    args = fleet_cli.build_parser().parse_args([str(bags), "--output-dir", str(out), *options])
    template = prepared_template(fleet_cli.config_from_args(args))
    inputs = [BagInput(bags / name, name, *fingerprint(bags / name)) for name in frames]
    planned = plan(inputs, manifest, configuration_hash(template), out, output_bags=True)
    assert {p.bag.name: p.evaluate for p in planned} == {"big": False, "mid": True, "small": True}
