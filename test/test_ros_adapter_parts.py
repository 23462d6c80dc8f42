"""Parts of the ROS adapter that need no running node: health over a window, model reloads that
release the old engine first, the closest-name hint for misspelled parameters, problem logging."""
from __future__ import annotations

import gc
import weakref

import pytest

from dpt_ros.node_parameters import PARAMETERS, closest_name, model_config_from, parameter_values_of

pytestmark = pytest.mark.ros  # dpt_ros.ros imports rclpy and message types


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def health_after(events, window=10.0, advance=0.0):
    from dpt_ros.ros.diagnostics import FrameCounters, camera_health

    clock = FakeClock()
    counters = FrameCounters(clock=clock)
    for kind, problem in events:
        counters.count(kind, problem=problem)
        clock.now += 0.1
    clock.now += advance
    return camera_health(counters.recent(window), counters.totals()["received"] > 0, window, "/image")


def test_one_rejected_frame_is_forgotten_once_it_leaves_the_window():
    from dpt_ros.ros.diagnostics import OK, WARN

    events = [("received", ""), ("rejected", "bad encoding")] + [("received", ""), ("processed", "")] * 5
    assert health_after(events).level == WARN
    late = [("received", ""), ("rejected", "bad encoding")]
    # The rejection is 10.5 s old, the good frames after it are recent.
    from dpt_ros.ros.diagnostics import FrameCounters, camera_health

    clock = FakeClock()
    counters = FrameCounters(clock=clock)
    for kind, problem in late:
        counters.count(kind, problem=problem)
    clock.now += 10.5
    for kind in ("received", "processed") * 3:
        counters.count(kind)
    health = camera_health(counters.recent(10.0), True, 10.0, "/image")
    assert (health.level, health.message) == (OK, "running")


def test_frames_arriving_with_none_succeeding_is_an_error_with_the_reason():
    from dpt_ros.ros.diagnostics import ERROR

    events = [("received", ""), ("failed", "RuntimeError: CUDA error: an illegal memory access")] * 4
    health = health_after(events)
    assert health.level == ERROR and "no frame succeeded" in health.message and "CUDA error" in health.message


def test_silence_is_a_warning_that_says_how_long():
    from dpt_ros.ros.diagnostics import WARN

    assert health_after([]).message == "waiting for images on /image"
    health = health_after([("received", ""), ("processed", "")], advance=30.0)
    assert health.level == WARN and health.message == "no images on /image for 30 s"


def test_a_reload_releases_the_old_engine_before_building_the_new_one():
    """Finding 3: the new engine (and its CUDA graphs) was built while the old one was alive."""
    from dpt_ros.ros.worker import ModelHolder

    class Engine:
        device = None

    alive_when_building = []
    previous = []

    def build(config):
        alive_when_building.append(previous[-1]() is not None if previous else False)
        engine = Engine()
        previous.append(weakref.ref(engine))
        return engine

    holder = ModelHolder(build)
    holder.load("first")
    holder.load("second")
    gc.collect()
    assert alive_when_building == [False, False]
    assert holder.config == "second"


def test_model_config_and_parameter_values_round_trip():
    values = {spec.name: spec.default for spec in PARAMETERS}
    values.update({"model.tasks": "both", "input_size": 96, "model.variant": "dpt_large"})
    config = model_config_from(values)
    assert config.tasks == ("depth", "segmentation") and config.input_size == 96
    assert model_config_from({**values, **parameter_values_of(config)}) == config


@pytest.mark.parametrize("typo, meant", [
    ("varient", "model.variant"), ("cloud.strid", "cloud.stride"), ("input_sise", "input_size"),
    ("qos.input.reliabilty", "qos.input.reliability"), ("camera", "cameras"), ("xyz", None),
])
def test_closest_name_of_a_misspelled_parameter(typo, meant):
    known = [spec.name for spec in PARAMETERS] + ["cameras", "use_sim_time"]
    assert closest_name(typo, known) == meant


def test_each_kind_of_problem_is_logged_once_per_period_and_kinds_do_not_hide_each_other():
    from dpt_ros.ros.camera import THROTTLE_S, ProblemLog

    clock = FakeClock()
    logged = []
    log = ProblemLog(logged.append, clock=clock)
    log("unsupported encoding 'xyz16'")
    log("unsupported encoding 'xyz16'")
    log("image is 8000x6000 pixels, more than 100 accepted")
    log("image is 9000x6000 pixels, more than 100 accepted")  # same kind, other numbers
    clock.now += THROTTLE_S
    log("unsupported encoding 'xyz16'")
    assert logged == ["unsupported encoding 'xyz16'", "image is 8000x6000 pixels, more than 100 accepted",
                      "unsupported encoding 'xyz16'"]


def test_timer_stats_fill_silence_only():
    """~/stats on the timer carries counts no processed frame's stats carried (rejected-only input),
    and stays quiet while frames are processed (no zero-timing messages between real ones)."""
    from dpt_ros.ros.diagnostics import FrameCounters

    counters = FrameCounters(clock=FakeClock())
    assert not counters.stats_due_on_timer()            # nothing happened
    counters.count("received")
    counters.count("rejected", problem="bad encoding")
    assert counters.stats_due_on_timer()                # rejected only: the timer reports it
    counters.reported()
    assert not counters.stats_due_on_timer()            # and only once
    counters.count("received")
    counters.count("processed")
    counters.reported()                                 # the frame's own stats
    counters.count("received")
    counters.count("dropped")                           # between frames: the next frame's stats carry it
    assert not counters.stats_due_on_timer()            # a frame was processed in this period
    assert counters.stats_due_on_timer()                # a period without one: now the timer reports it
