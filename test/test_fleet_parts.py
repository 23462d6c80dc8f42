"""The parts of evaluate_bags that need no Ray: the shared command line, finding and naming bags,
the manifest and what a re-run does with it, the fleet report's merging, refusals before any work.

The runs on Ray are in test_evaluate_bags.py.
"""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from dpt_ros.evaluation import cli, fleet_cli
from dpt_ros.evaluation.config import EvaluationError
from dpt_ros.evaluation.fleet import per_bag_config, prepared_template
from dpt_ros.evaluation.fleet_inputs import BagInput, assign_names, find_bags, fingerprint
from dpt_ros.evaluation.fleet_report import PENDING, BagOutcome, build_fleet_report, write_fleet_report
from dpt_ros.evaluation.manifest import (
    CHANGED,
    CONFIGURATION_CHANGED,
    DONE,
    DONE_BEFORE,
    FAILED,
    FAILED_BEFORE,
    INTERRUPTED,
    NEW,
    RESULTS_MISSING,
    RUNNING,
    UNFINISHED_BEFORE,
    Manifest,
    configuration_hash,
    plan,
)
from dpt_ros.evaluation.run import evaluate
from support.bags import HEIGHT, IMAGE_TOPIC, WIDTH, SceneReadingEngine, plane_depths, write_bag

PER_BAG_OPTIONS = {"input_bag", "output_bag", "report_dir"}  # where evaluate_bag reads and writes one bag


# ------------------------------------------------------------------------------------------------
# One command line for both
# ------------------------------------------------------------------------------------------------

def _actions(parser):
    return {action.dest: action for action in parser._actions if action.dest != "help"}


def test_every_evaluate_bag_option_means_the_same_in_evaluate_bags():
    single, fleet = _actions(cli.build_parser()), _actions(fleet_cli.build_parser())
    shared = set(single) - PER_BAG_OPTIONS
    assert shared <= set(fleet), shared - set(fleet)
    for dest in shared:
        a, b = single[dest], fleet[dest]
        assert (a.option_strings, a.default, a.type, a.choices, a.nargs, a.required, a.help) == \
            (b.option_strings, b.default, b.type, b.choices, b.nargs, b.required, b.help), dest
    assert set(fleet) - shared == {"inputs", "output_dir", "no_output_bags", "ray_address", "workers",
                                   "cpus_per_worker", "gpus_per_worker"}


def test_the_same_arguments_give_the_same_configuration_for_a_bag(tmp_path):
    options = ["--image-topic", IMAGE_TOPIC, "--gt-depth-topic", "/gt/depth", "--gt-labels-topic", "/gt/labels",
               "--variant", "dpt_hybrid_kitti", "--depth-max-range", "30", "--stride", "2", "--max-frames", "9",
               "--preset", "kitti", "--batch-size", "3", "--copy-topics", "/tf", "--output-prefix", "/eval"]
    bag = tmp_path / "bags" / "drive"
    single = cli.config_from_args(cli.build_parser().parse_args(
        [str(bag), *options, "--output-bag", str(tmp_path / "out" / "drive" / "output_bag"),
         "--report-dir", str(tmp_path / "out" / "drive"), "--no-progress"]))
    fleet = fleet_cli.config_from_args(fleet_cli.build_parser().parse_args(
        [str(tmp_path / "bags"), *options, "--output-dir", str(tmp_path / "out")]))
    one_bag = per_bag_config(prepared_template(fleet), BagInput(bag, "drive", 0, 0), tmp_path / "out")
    assert one_bag == single.resolved()


# ------------------------------------------------------------------------------------------------
# Finding and naming bags
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    """robot1/{day1 (mcap), day2 (sqlite3)}, robot2/day1 (a second 'day1'), loose/x.mcap,
    notes.txt, and eval/ (an output folder holding an output bag)."""
    root = tmp_path / "data"
    for name, storage in (("robot1/day1", "mcap"), ("robot1/day2", "sqlite3"), ("robot2/day1", "mcap"),
                          ("eval/day1/output_bag", "mcap")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_bag(root / name, storage, 1)
    (root / "loose").mkdir()
    mcap = next((root / "robot2" / "day1").glob("*.mcap"))
    (root / "loose" / "x.mcap").write_bytes(mcap.read_bytes())
    (root / "notes.txt").write_text("not a bag")
    return root


def test_bags_are_found_in_directories_and_by_patterns_each_once(tree, monkeypatch):
    day1, day2, other_day1 = tree / "robot1" / "day1", tree / "robot1" / "day2", tree / "robot2" / "day1"
    loose = tree / "loose" / "x.mcap"
    # A directory is searched, never below the output folder; a bag is not searched further.
    assert find_bags([str(tree)], exclude=tree / "eval") == [loose, day1, day2, other_day1]
    # A pattern matching a bag's storage file stands for the bag; the same bag named twice is one.
    assert find_bags([str(tree / "robot*" / "*" / "*.mcap"), str(day1), str(tree / "loose" / "*")]) == \
        [day1, other_day1, loose]
    assert find_bags([str(day2)]) == [day2]
    # Relative inputs become absolute paths (workers elsewhere read them where they lie).
    monkeypatch.chdir(tree)
    assert find_bags(["robot1/day2"]) == [day2]


@pytest.mark.parametrize("given,message", [
    ("missing", "does not exist"),
    ("robot9*", "no file or directory matches"),
    ("notes.txt", "is not a rosbag2 bag"),
    ("empty", "no rosbag2 bag"),
])
def test_an_input_that_names_no_bag_is_an_error(tree, given, message):
    (tree / "empty").mkdir()
    with pytest.raises(EvaluationError, match=message):
        find_bags([str(tree / given)])


def test_bags_of_the_same_name_get_their_parents_names_and_keep_them(tree):
    day1, other_day1, day2 = tree / "robot1" / "day1", tree / "robot2" / "day1", tree / "robot1" / "day2"
    names = assign_names([day1, other_day1, day2], known={}, taken={"report.json"})
    assert names == {day1: "day1", other_day1: "robot2__day1", day2: "day2"}
    # A later run keeps the names the manifest has, and a new bag avoids them and what is on disk.
    third = tree / "robot3" / "day1"
    again = assign_names([third, other_day1], known=names, taken={"robot3__day1"})
    assert again[other_day1] == "robot2__day1"
    assert again[third] not in {"day1", "robot2__day1", "robot3__day1"}
    assert again[third].endswith("day1")


def test_fingerprint_changes_when_a_bag_changes(tmp_path):
    bag = write_bag(tmp_path / "bag", "sqlite3", 2)
    before = fingerprint(bag)
    assert before == fingerprint(bag)
    storage = next(bag.glob("*.db3"))
    stat = storage.stat()
    os.utime(storage, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten, same size
    assert fingerprint(bag)[0] == before[0] and fingerprint(bag)[1] > before[1]
    with open(storage, "ab") as stream:
        stream.write(b"\0" * 10)
    assert fingerprint(bag)[0] == before[0] + 10


# ------------------------------------------------------------------------------------------------
# Manifest and plan
# ------------------------------------------------------------------------------------------------

def _bag(tmp_path, name, size=100, mtime=5):
    return BagInput(tmp_path / "bags" / name, name, size, mtime)


def _results(output_dir, name, output_bag=True):
    (output_dir / name).mkdir(parents=True)
    (output_dir / name / "report.json").write_text("{}")
    if output_bag:
        (output_dir / name / "output_bag").mkdir()


def test_a_rerun_skips_only_what_is_done_unchanged_with_the_same_options(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    manifest = Manifest(out / "manifest.json")
    bags = {name: _bag(tmp_path, name) for name in
            ("done", "touched", "failed", "interrupted", "running", "other_options", "lost", "new")}
    for name, state in (("done", DONE), ("touched", DONE), ("failed", FAILED), ("interrupted", INTERRUPTED),
                        ("running", RUNNING), ("other_options", DONE), ("lost", DONE)):
        manifest.record(bags[name], "old" if name == "other_options" else "hash", state)
        if name != "lost":
            _results(out, name)
    bags["touched"] = BagInput(bags["touched"].path, "touched", 100, 6)  # modified since
    planned = {p.bag.name: (p.evaluate, p.why) for p in plan(list(bags.values()), Manifest.load(out), "hash", out,
                                                             output_bags=True)}
    assert planned == {"done": (False, DONE_BEFORE), "touched": (True, CHANGED), "failed": (True, FAILED_BEFORE),
                       "interrupted": (True, UNFINISHED_BEFORE), "running": (True, UNFINISHED_BEFORE),
                       "other_options": (True, CONFIGURATION_CHANGED), "lost": (True, RESULTS_MISSING),
                       "new": (True, NEW)}
    # Asking for output bags where the earlier run wrote none: the bag is evaluated again.
    (out / "done" / "output_bag").rmdir()
    assert plan([bags["done"]], manifest, "hash", out, output_bags=True)[0].why == RESULTS_MISSING
    assert plan([bags["done"]], manifest, "hash", out, output_bags=False)[0].why == DONE_BEFORE


def test_the_manifest_is_replaced_atomically(tmp_path, monkeypatch):
    manifest = Manifest(tmp_path / "manifest.json")
    manifest.record(_bag(tmp_path, "a"), "hash", DONE, frames_processed=3)
    before = (tmp_path / "manifest.json").read_text()

    def broken_dump(data, stream, **kwargs):
        stream.write('{"format": 1, "bags": {')  # a write that stops half-way (disk full, Ctrl-C ...)
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(KeyboardInterrupt):
        manifest.record(_bag(tmp_path, "b"), "hash", RUNNING)
    monkeypatch.undo()
    assert (tmp_path / "manifest.json").read_text() == before  # the previous state, whole
    assert sorted(os.listdir(tmp_path)) == ["manifest.json"]  # no temporary file left
    loaded = Manifest.load(tmp_path)
    assert loaded.entries[tmp_path / "bags" / "a"].state == DONE
    assert loaded.entries[tmp_path / "bags" / "a"].frames_processed == 3


def test_an_unreadable_manifest_is_refused_not_ignored(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": 1, "bags": {"/a": {"nam')
    with pytest.raises(EvaluationError, match="cannot read .*manifest.json .*remove it"):
        Manifest.load(tmp_path)


def test_the_configuration_hash_follows_the_options_and_the_files_they_name(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"1234")

    def fleet_hash(*options):
        args = fleet_cli.build_parser().parse_args(["bags", "--output-dir", str(tmp_path / "out"), "--image-topic",
                                                    IMAGE_TOPIC, "--variant", "dpt_tiny", *options])
        return configuration_hash(prepared_template(fleet_cli.config_from_args(args)))

    base = fleet_hash("--weights", str(weights))
    assert base == fleet_hash("--weights", str(weights), "--no-progress", "--workers", "3")  # not about results
    assert base != fleet_hash("--weights", str(weights), "--max-depth", "9")
    assert base != fleet_hash("--weights", str(weights), "--no-output-bags")
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # retrained, same name
    assert base != fleet_hash("--weights", str(weights))


# ------------------------------------------------------------------------------------------------
# The fleet report: overall metrics from the per-bag sums
# ------------------------------------------------------------------------------------------------

def test_fleet_metrics_weigh_every_frame_and_every_pixel_of_the_done_bags(tmp_path):
    """Bags of 2 and 4 frames, 10 % and 30 % too near: the fleet's frame-weighted AbsRel is
    (2 x 0.1 + 4 x 0.3) / 6 and its pixel-weighted RMSE the root of the mean squared error over
    all pixels; failed, interrupted and not started bags do not count, and the worst bag is first."""
    out = tmp_path / "out"
    args = ("--image-topic", IMAGE_TOPIC, "--gt-depth-topic", "/gt/depth", "--gt-labels-topic", "/gt/labels",
            "--variant", "dpt_hybrid_kitti", "--max-depth", "4.3", "--no-progress")
    outcomes = []
    for name, frames, factor in (("good", 2, 0.9), ("bad", 4, 0.7)):  # too near: never clipped to 4.3 m
        bag = write_bag(tmp_path / name, "mcap", frames)
        config = cli.config_from_args(cli.build_parser().parse_args([str(bag), *args, "--report-dir",
                                                                     str(out / name)]))
        evaluate(config, engine=SceneReadingEngine("metric_depth", factor=factor, labels=True))
        outcomes.append(BagOutcome(BagInput(bag, name, 1, 1), DONE, NEW, evaluated=True))
    outcomes += [BagOutcome(BagInput(tmp_path / "broken", "broken", 1, 1), FAILED, NEW, True, reason="corrupt"),
                 BagOutcome(BagInput(tmp_path / "cut", "cut", 1, 1), INTERRUPTED, NEW, True, reason="interrupted"),
                 BagOutcome(BagInput(tmp_path / "later", "later", 1, 1), PENDING, NEW, False)]
    report, merged = build_fleet_report(outcomes, out, {"configuration": {}})

    assert report["depth"]["abs_rel"] == pytest.approx((2 * 0.1 + 4 * 0.3) / 6, rel=1e-6)
    # Pixels in range (<= 4.3 m) of frame k: top plane (2 + 0.5k m) always, bottom (4 + 0.25k m) for k < 2.
    errors = [((1 - factor) * depth) ** 2 for frames, factor in ((2, 0.9), (4, 0.7)) for k in range(frames)
              for depth, pixels in ((plane_depths(k)[0], 1536), (plane_depths(k)[1], 1536 if k < 2 else 0))
              for _ in range(pixels)]
    assert report["depth_pixel_weighted"]["rmse"] == pytest.approx(math.sqrt(np.mean(errors)), rel=1e-6)
    assert report["depth_pixel_weighted"]["valid_pixels"] == len(errors)
    # Labels: right half right, left half wrong in every frame: accuracy 1/2 over all labelled pixels.
    assert report["segmentation"]["pixel_accuracy"] == pytest.approx(0.5)
    assert report["segmentation"]["evaluated_pixels"] == 6 * (HEIGHT - 1) * WIDTH
    assert report["counts"]["processed"] == 6
    assert [row["name"] for row in report["per_bag"]] == ["bad", "good", "cut", "later", "broken"]
    assert report["bags"] == {"total": 5, "done": 2, "failed": 1, "interrupted": 1, "not_started": 1,
                              "evaluated_now": 4, "done_before": 0}
    assert report["failures"] == [{"name": "broken", "bag": str(tmp_path / "broken"), "reason": "corrupt"}]
    assert report["interrupted"] is True

    written = write_fleet_report(report, merged, out)
    assert set(written) == {"bags_abs_rel", "bags_mean_iou", "error_vs_depth", "confusion_matrix", "json",
                            "markdown"}
    markdown = (out / "report.md").read_text()
    assert "| `broken` (" in markdown and "| corrupt |" in markdown
    assert markdown.index("`bad`") < markdown.index("`good`")
    assert json.loads((out / "report.json").read_text())["depth"]["abs_rel"] == pytest.approx(report["depth"]["abs_rel"])


# ------------------------------------------------------------------------------------------------
# Refused before any work (no Ray is started for these)
# ------------------------------------------------------------------------------------------------

def _refused(capsys, *args) -> str:
    code = fleet_cli.main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("evaluate_bags: error: "), err
    return err[0]


def test_bad_options_and_inputs_are_refused_with_one_line(tmp_path, capsys):
    bag = write_bag(tmp_path / "bags" / "a", "mcap", 1)
    base = ("--image-topic", IMAGE_TOPIC, "--output-dir", tmp_path / "out")
    assert "--input-size must be a multiple of 32" in _refused(capsys, bag, *base, "--input-size", "33")
    assert "no file or directory matches" in _refused(capsys, tmp_path / "bags" / "z*", *base)
    assert "--copy-topics needs the output bags" in _refused(capsys, bag, *base, "--copy-topics", "/tf",
                                                             "--no-output-bags")
    assert "--workers must be at least 1" in _refused(capsys, bag, *base, "--workers", "0")
    (tmp_path / "file").write_text("x")
    assert "cannot create the output folder" in _refused(capsys, bag, "--image-topic", IMAGE_TOPIC,
                                                         "--output-dir", tmp_path / "file" / "out")
    assert not (tmp_path / "out").exists()


def test_two_runs_cannot_write_one_output_folder(tmp_path, capsys):
    import fcntl

    bag = write_bag(tmp_path / "bags" / "a", "mcap", 1)
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / ".evaluate_bags.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds it
        line = _refused(capsys, bag, "--image-topic", IMAGE_TOPIC, "--output-dir", tmp_path / "out")
    assert f"another evaluate_bags run is writing to {tmp_path / 'out'}" in line


def test_fleet_online_alignment_rows_are_the_bags_rows_added_up(tmp_path):
    """With online alignment (simulated sparse depth) each bag's report has the online, oracle and
    no-alignment rows; the fleet's rows weigh every scored frame of every bag the same, and count
    the frames a row could not score, by reason, over all bags."""
    out = tmp_path / "out"
    args = ("--image-topic", IMAGE_TOPIC, "--gt-depth-topic", "/gt/depth", "--variant", "dpt_hybrid_kitti",
            "--max-depth", "4.3", "--simulate-sparse", "points:300,seed=3", "--no-progress")
    outcomes, reports = [], []
    for name, frames, factor in (("near", 2, 0.9), ("far", 4, 0.7)):
        bag = write_bag(tmp_path / name, "mcap", frames)
        config = cli.config_from_args(cli.build_parser().parse_args([str(bag), *args, "--report-dir",
                                                                     str(out / name)]))
        reports.append(evaluate(config, engine=SceneReadingEngine("metric_depth", factor=factor)))
        outcomes.append(BagOutcome(BagInput(bag, name, 1, 1), DONE, NEW, evaluated=True))
    report, merged = build_fleet_report(outcomes, out, {"configuration": {}})

    for row in ("online", "oracle", "none"):
        bag_rows = [bag_report["depth_rows"][row] for bag_report in reports]
        fleet_row = report["depth_rows"][row]
        assert fleet_row["frames"] == sum(r["frames"] for r in bag_rows) > 0
        expected = sum(r["frames"] * r["depth"]["abs_rel"] for r in bag_rows) / fleet_row["frames"]
        assert fleet_row["depth"]["abs_rel"] == pytest.approx(expected, rel=1e-9)
        unscored = {}
        for r in bag_rows:
            for reason, count in r["unscored_frames"].items():
                unscored[reason] = unscored.get(reason, 0) + count
        assert fleet_row["unscored_frames"] == unscored
    # No alignment is the model's own metres, 10 % and 30 % too near.
    assert report["depth_rows"]["none"]["depth"]["abs_rel"] == pytest.approx((2 * 0.1 + 4 * 0.3) / 6, rel=1e-6)
    write_fleet_report(report, merged, out)
    assert "### Depth with online alignment" in (out / "report.md").read_text()
