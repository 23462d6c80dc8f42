"""An evaluate_bags run: many bags evaluated in parallel on Ray, resumable, with one fleet report.

``evaluate_fleet(FleetConfig) -> report`` is the whole run, callable from Python;
``dpt_ros.evaluation.fleet_cli`` is its command line.  Each bag is evaluated by
``dpt_ros.evaluation.run.evaluate`` in a Ray worker that holds one model, into
``<output dir>/<bag name>/`` (its report and output bag, what evaluate_bag writes); the manifest
(``manifest.py``) records each bag's end, and the fleet report (``fleet_report.py``) merges the
bags' sums.  This process (the driver) only plans, hands bags out, and writes the manifest and the
fleet report.
"""
from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dpt_ros.evaluation import bag_io
from dpt_ros.evaluation.config import EvaluationConfig, EvaluationError
from dpt_ros.evaluation.fleet_inputs import BagInput, assign_names, find_bags, fingerprint
from dpt_ros.evaluation.fleet_report import FLEET_PLOTS, PENDING, BagOutcome, build_fleet_report, write_fleet_report
from dpt_ros.evaluation.fleet_workers import RayOptions, RaySession, start_workers
from dpt_ros.evaluation.manifest import (
    DONE,
    FAILED,
    INTERRUPTED,
    MANIFEST_NAME,
    OUTPUT_BAG_DIRNAME,
    RUNNING,
    Manifest,
    PlannedBag,
    configuration_hash,
    plan,
)
from dpt_ros.evaluation.report import REPORT_JSON, REPORT_MD
from dpt_ros.model_config import ModelLoadError

LOCK_NAME = ".evaluate_bags.lock"
# Names in the output folder that are the run's own, never a bag's.
RESERVED_NAMES = {MANIFEST_NAME, REPORT_JSON, REPORT_MD, LOCK_NAME, *FLEET_PLOTS}
POLL_S = 0.5  # how often the driver looks at the workers' progress and for Ctrl-C


@dataclass(frozen=True)
class FleetConfig:
    """What an evaluate_bags run is asked to do.

    ``evaluation`` holds every evaluate_bag option; its input_bag, output_bag and report_dir are
    ignored (each bag gets its own).  ``output_bags`` False writes only the reports."""

    inputs: tuple[str, ...]
    output_dir: Path
    evaluation: EvaluationConfig
    output_bags: bool = True
    ray: RayOptions = RayOptions()
    progress: bool = True


def say(line: str) -> None:
    """One line for people on stderr, above the progress bar when there is one."""
    from tqdm import tqdm

    tqdm.write(f"evaluate_bags: {line}", file=sys.stderr)


def prepared_template(config: FleetConfig) -> EvaluationConfig:
    """The per-bag configuration without the bag: checked as evaluate_bag checks it (EvaluationError
    before any work) and with the files it names made absolute, for workers elsewhere."""
    template = config.evaluation
    if template.copy_topics and not config.output_bags:
        raise EvaluationError("--copy-topics needs the output bags (drop --no-output-bags)")
    model = template.model
    template = dataclasses.replace(
        template, input_bag=Path(), report_dir=None, progress=False,
        output_bag=Path(OUTPUT_BAG_DIRNAME) if config.output_bags else None,
        gt_label_map=_absolute(template.gt_label_map),
        model=dataclasses.replace(model, weights=_absolute(model.weights),
                                  segmentation_weights=_absolute(model.segmentation_weights)))
    return template.resolved()


def _absolute(value):
    """A local file's path made absolute; anything else ('auto', '', a URL, None) as it is."""
    if value and not str(value).startswith(("http://", "https://")) and os.path.exists(value):
        return type(value)(os.path.abspath(value))
    return value


def per_bag_config(template: EvaluationConfig, bag: BagInput, output_dir: Path) -> EvaluationConfig:
    """One bag's evaluate_bag configuration: read where it lies, written to DIR/<name>/."""
    bag_dir = output_dir / bag.name
    return dataclasses.replace(template, input_bag=bag.path, report_dir=bag_dir,
                               output_bag=bag_dir / OUTPUT_BAG_DIRNAME if template.output_bag else None)


def preflight(config: EvaluationConfig) -> int:
    """Check one bag as evaluate() does before any work (readable, topics and their types, a
    decodable first image), here in the driver so that a bag that cannot work fails without
    taking a worker; returns the frames it will give, for the progress bar and to start the
    longest bags first.  Raises BagError or EvaluationError with evaluate()'s message."""
    from dpt_ros.evaluation.run import checked_input, frames_to_select

    typestore, _ = bag_io.make_typestore()
    reader = bag_io.open_reader(config.input_bag)
    try:
        topics = checked_input(reader, typestore, config)
        return frames_to_select(sum(c.msgcount for c in topics.image), config)
    finally:
        reader.close()


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------

def evaluate_fleet(config: FleetConfig) -> dict:
    """Evaluate every bag ``config.inputs`` names that is not done already; returns the fleet
    report (report.json's dictionary), also when interrupted (then ``interrupted`` is True).

    Raises EvaluationError before any bag is evaluated for bad options, inputs that name no bag,
    an unusable output folder or manifest, or a Ray that cannot be started or joined; and
    ModelLoadError when no worker can load the model."""
    config.ray.check()
    template = prepared_template(config)
    output_dir = Path(os.path.abspath(config.output_dir))
    paths = find_bags(config.inputs, exclude=output_dir)
    _make_output_dir(output_dir)
    with _OutputLock(output_dir):
        manifest = Manifest.load(output_dir)
        taken = {p.name for p in output_dir.iterdir()} - set(manifest.names().values())
        names = assign_names(paths, manifest.names(), taken | RESERVED_NAMES)
        bags = [BagInput(path, names[path], *fingerprint(path)) for path in paths]
        config_hash = configuration_hash(template)
        planned = plan(bags, manifest, config_hash, output_dir, config.output_bags)
        todo = [p for p in planned if p.evaluate]
        _say_plan(planned)
        run = FleetRun(config, template, output_dir, manifest, config_hash)
        begin = time.perf_counter()
        if todo:
            run.evaluate(todo)
        wall_s = time.perf_counter() - begin
        outcomes = [run.outcomes.get(p.bag.path) or BagOutcome(p.bag, DONE if not p.evaluate else PENDING, p.why,
                                                                 evaluated=False) for p in planned]
        head = {
            "configuration": template.to_json(), "configuration_hash": config_hash,
            "versions": _versions(), "output_dir": str(output_dir), "output_bags": config.output_bags,
            "input": {"engine": run.engine, "image_type": "per bag", "storage": "per bag"},
            "depth_output_kind": template.depth_output_kind, "alignment": template.alignment,
            "ray": run.ray_info,
            "timing": _timing(run, wall_s),
        }
        report, merged = build_fleet_report(outcomes, output_dir, head)
        write_fleet_report(report, merged, output_dir)
    _say_summary(report, output_dir)
    return report


def _timing(run: "FleetRun", wall_s: float) -> dict:
    """Wall time and frames per second of the whole run and of the evaluation alone (first bag
    handed out to last result), with Ray's start-up, the workers' and the per-bag overhead."""
    evaluating_s = run.timing.get("evaluating_s")
    frames = run.frames_processed
    return {"frames_processed": frames, "wall_s": wall_s,
            "frames_per_second": frames / wall_s if frames else None,
            "frames_per_second_evaluating": frames / evaluating_s if frames and evaluating_s else None,
            **{key: run.timing.get(key) for key in ("ray_start_s", "workers_ready_s", "evaluating_s",
                                                    "ray_overhead_per_bag_s")}}


def _versions() -> dict:
    from dpt_ros.evaluation.run import versions

    found = versions()
    try:
        import ray

        found["ray"] = ray.__version__
    except ImportError:  # pragma: no cover - ray is a requirement
        found["ray"] = None
    return found


def _make_output_dir(output_dir: Path) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvaluationError(f"cannot create the output folder {output_dir}: {exc.strerror or exc}") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise EvaluationError(f"cannot write to the output folder {output_dir}: permission denied")


class _OutputLock:
    """One run per output folder at a time: two would overwrite each other's bags and manifest."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / LOCK_NAME
        self.handle = None

    def __enter__(self):
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise EvaluationError(f"another evaluate_bags run is writing to {self.path.parent}") from None
        return self

    def __exit__(self, *exc_info):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _say_plan(planned: list[PlannedBag]) -> None:
    todo = [p for p in planned if p.evaluate]
    reasons: dict[str, int] = {}
    for p in planned:
        reasons[p.why] = reasons.get(p.why, 0) + 1
    detail = ", ".join(f"{count} {why}" for why, count in reasons.items())
    say(f"{len(planned)} bag{'s' if len(planned) != 1 else ''} ({detail}): {len(todo)} to evaluate"
        + (f", {len(planned) - len(todo)} skipped" if len(todo) < len(planned) else ""))


def _say_summary(report: dict, output_dir: Path) -> None:
    bags = report["bags"]
    depth = report.get("depth")
    segmentation = report.get("segmentation")
    metrics = (f"; overall AbsRel {depth['abs_rel']:.4f}" if depth else "") + \
        (f", mIoU {segmentation['mean_iou']:.4f}" if segmentation else "")
    say(f"{bags['done']} of {bags['total']} bags done ({bags['done_before']} before), {bags['failed']} failed"
        + (f", {bags['interrupted'] + bags['not_started']} not finished" if report["interrupted"] else "")
        + f"{metrics}; fleet report: {output_dir / REPORT_MD}")


class _StopSignals:
    """Ctrl-C / SIGTERM: the first asks for a clean stop (no new bag; bags being evaluated close
    their outputs as interrupted), a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self.previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, _frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        say("stopping: no new bag is started; the bags being evaluated close their outputs "
            "(Ctrl-C again to stop now)")

    def __exit__(self, *exc_info):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class FleetRun:
    """Hands the bags to Ray workers and records how each ends (in the manifest at once)."""

    def __init__(self, config: FleetConfig, template: EvaluationConfig, output_dir: Path, manifest: Manifest,
                 config_hash: str):
        self.config = config
        self.template = template
        self.output_dir = output_dir
        self.manifest = manifest
        self.config_hash = config_hash
        self.outcomes: dict[Path, BagOutcome] = {}
        self.engine: dict | None = None
        self.ray_info: dict = {}
        self.timing: dict = {}
        self.frames_processed = 0
        self.bar = None
        self.total = 0  # bags to evaluate in this run
        self.count = 0  # of which finished

    def evaluate(self, todo: list[PlannedBag]) -> None:
        self.total = len(todo)
        estimates = {}
        for planned in todo:
            try:
                estimates[planned.bag.path] = preflight(per_bag_config(self.template, planned.bag, self.output_dir))
            except (EvaluationError, bag_io.BagError) as exc:
                self.started(planned)
                self.finished(planned, {"state": FAILED, "reason": " ".join(str(exc).split())})
        # Longest first: a long bag started last would keep the other workers waiting at the end.
        queue = sorted((p for p in todo if p.bag.path in estimates), key=lambda p: -estimates[p.bag.path])
        if not queue:
            return
        with RaySession(self.config.ray.address) as session:
            options = self._worker_options(session)
            count = self._worker_count(session, options, len(queue))
            self.ray_info = {"where": session.description, "workers": count,
                             "cpus_per_worker": options.cpus_per_worker, "gpus_per_worker": options.gpus_per_worker}
            self.timing["ray_start_s"] = session.start_s
            say(f"{count} worker{'s' if count != 1 else ''} on {session.description} "
                f"(ready in {session.start_s:.1f} s), each with {options.cpus_per_worker:g} CPU"
                f"{f' and {options.gpus_per_worker:g} GPU' if options.gpus_per_worker else ''}")
            try:
                with _StopSignals() as stop:
                    _Dispatch(self, session, options, count, queue, estimates, stop).run()
            finally:
                if self.bar is not None:
                    self.bar.close()

    def open_bar(self, total: int) -> None:
        """The overall bar, opened when the first bag is handed out so that its rate and time left
        count evaluation, not Ray's and the workers' start-up."""
        if self.config.progress and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="frame", desc="evaluate_bags", dynamic_ncols=True, file=sys.stderr)

    def _worker_options(self, session: RaySession) -> RayOptions:
        """The options with --gpus-per-worker filled in: one GPU per worker where the model runs
        on a GPU and the cluster has some, none otherwise."""
        import ray

        options = self.config.ray
        gpus = ray.cluster_resources().get("GPU", 0.0)
        device = self.template.model.device
        if options.gpus_per_worker is None:
            wants_gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
            options = dataclasses.replace(options, gpus_per_worker=1.0 if wants_gpu and gpus > 0 else 0.0)
        if device.startswith("cuda") and gpus == 0:
            raise EvaluationError(f"--device {device}, but {session.description} has no GPU")
        return options

    def _worker_count(self, session: RaySession, options: RayOptions, bags: int) -> int:
        fits, resources = session.capacity(options)
        if fits < 1:
            raise EvaluationError(f"{session.description} ({resources}) has no room for one worker with "
                                  f"{options.cpus_per_worker:g} CPUs and {options.gpus_per_worker:g} GPUs")
        wanted = options.workers or fits
        if wanted > fits:
            say(f"--workers {wanted}: {session.description} ({resources}) holds {fits}; using {fits}")
        return min(wanted, fits, bags)

    # -- what the dispatch reports back -------------------------------------------------------

    def started(self, planned: PlannedBag) -> None:
        """A bag is handed to a worker: its old results go, the manifest says it is running."""
        # Running first: a run killed while the old results are being removed leaves a bag that
        # the next run evaluates again, never old results taken for new ones.
        self.manifest.record(planned.bag, self.config_hash, RUNNING)
        bag_dir = self.output_dir / planned.bag.name
        if bag_dir.is_symlink() or bag_dir.is_file():
            bag_dir.unlink()
        elif bag_dir.exists():
            shutil.rmtree(bag_dir)  # this bag's own folder (names are never shared, see assign_names)

    def finished(self, planned: PlannedBag, result: dict) -> None:
        self.count += 1
        state, reason = result["state"], result.get("reason")
        counts = result.get("counts") or {}
        self.manifest.record(planned.bag, self.config_hash, state, reason, counts.get("processed"))
        self.outcomes[planned.bag.path] = BagOutcome(planned.bag, state, planned.why, evaluated=True, reason=reason,
                                                     traceback=result.get("traceback"), worker_s=result.get("worker_s"))
        if state == DONE:
            self.frames_processed += counts["processed"]
        say(f"[{self.count}/{self.total}] {planned.bag.name}: {_result_line(result)}")


def _result_line(result: dict) -> str:
    state = result["state"]
    counts = result.get("counts") or {}
    if state == FAILED:
        return f"FAILED: {result['reason']}"
    if state == INTERRUPTED:
        return f"interrupted after {counts.get('selected', 0)} frames; evaluated again by the next run"
    parts = [f"{counts['processed']} frames" + (f" ({counts['undecodable']} undecodable)" if counts["undecodable"]
                                                 else "")]
    if result.get("depth"):
        parts.append(f"AbsRel {result['depth']['abs_rel']:.4f}")
    if result.get("segmentation"):
        parts.append(f"mIoU {result['segmentation']['mean_iou']:.4f}")
    wall = result["wall_s"]
    parts.append(f"{wall:.1f} s, {counts['processed'] / wall:.2f} frames/s" if wall > 0 else f"{wall:.1f} s")
    if result.get("warnings"):
        parts.append(f"{result['warnings']} warning{'s' if result['warnings'] != 1 else ''} in its report")
    return "done: " + ", ".join(parts)


class _Dispatch:
    """The driver's loop: workers load their model, take the next bag when free, report progress.

    A worker that cannot load the model is left out (with a warning); one that dies fails its bag
    and is replaced, at most as many times as there are workers."""

    def __init__(self, run: FleetRun, session: RaySession, options: RayOptions, count: int,
                 queue: list[PlannedBag], estimates: dict, stop: _StopSignals):
        self.run_ = run
        self.session = session
        self.options = options
        self.count = count
        self.queue = list(queue)
        self.estimates = estimates
        self.stop = stop
        self.idle: list = []
        self.loading: dict = {}  # load ref -> (worker, started)
        self.busy: dict = {}  # evaluate ref -> (worker, planned, submitted)
        self.frames_of_finished = 0
        self.load_errors: list[str] = []
        self.replacements = count
        self.stop_sent = False
        self.ready_s: list[float] = []
        self.overheads: list[float] = []
        self.first_hand_out: float | None = None
        self.last_return: float | None = None
        self.shown = None

    def run(self) -> None:
        import ray

        self._start(self.count)
        try:
            while self.busy or self.loading or (self.queue and not self.stop.requested):
                if not self.stop.requested:
                    self._hand_out()
                elif not self.stop_sent:
                    for worker, _, _ in self.busy.values():
                        worker.stop.remote()
                    self.stop_sent = True
                if self.queue and not (self.busy or self.loading or self.idle or self.stop.requested):
                    self._no_worker_left()
                    break
                refs = list(self.busy) + list(self.loading)
                done, _ = ray.wait(refs, num_returns=1, timeout=POLL_S)
                for ref in done:
                    if ref in self.loading:
                        self._loaded(ref)
                    else:
                        self._returned(ref)
                self._show_progress()
        except KeyboardInterrupt:  # a second Ctrl-C: stop now
            for worker, planned, _ in self.busy.values():
                ray.kill(worker)
                self.run_.finished(planned, {"state": INTERRUPTED, "reason": "stopped at once (second Ctrl-C)"})
            self.busy.clear()
        finally:  # workers hold a model each: none outlives the run, also on an error
            for worker in self.idle + [w for w, _ in self.loading.values()] + [w for w, _, _ in self.busy.values()]:
                ray.kill(worker)
            self._record_timing()

    def _start(self, count: int) -> None:
        now = time.perf_counter()
        for worker in start_workers(self.options, self.run_.template.model, count):
            self.loading[worker.load.remote()] = (worker, now)

    def _loaded(self, ref) -> None:
        import ray

        worker, started = self.loading.pop(ref)
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the worker process could not start or died
            info = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"}
        if info["error"]:
            self.load_errors.append(info["error"])
            say(f"warning: a worker cannot load the model{' on ' + info['host'] if info.get('host') else ''}: "
                f"{info['error']}")
            ray.kill(worker)
            return
        self.ready_s.append(time.perf_counter() - started)
        if self.run_.engine is None:
            self.run_.engine = {"device": info["device"], "precision": self.run_.template.model.precision,
                                "compile": self.run_.template.model.compile}
        self.idle.append(worker)

    def _no_worker_left(self) -> None:
        reason = f"no worker could load the model: {self.load_errors[-1] if self.load_errors else 'workers died'}"
        if self.first_hand_out is None:  # no bag was started: refused, as evaluate_bag refuses a model it cannot load
            raise ModelLoadError(reason)
        for planned in self.queue:
            self.run_.finished(planned, {"state": FAILED, "reason": reason})
        self.queue.clear()

    def _hand_out(self) -> None:
        while self.idle and self.queue:
            if self.first_hand_out is None:
                self.first_hand_out = time.perf_counter()
                self.run_.open_bar(sum(self.estimates.values()))
            worker, planned = self.idle.pop(), self.queue.pop(0)
            self.run_.started(planned)
            config = per_bag_config(self.run_.template, planned.bag, self.run_.output_dir)
            self.busy[worker.evaluate.remote(config)] = (worker, planned, time.perf_counter())

    def _returned(self, ref) -> None:
        import ray

        worker, planned, submitted = self.busy.pop(ref)
        self.last_return = time.perf_counter()
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the worker died (killed, out of memory, crashed)
            result = {"state": FAILED, "reason": f"its worker died: {type(exc).__name__}: "
                                                 f"{' '.join(str(exc).split())[:500]}"}
            ray.kill(worker)
            self.session.keep_logs = True
            if self.replacements > 0 and self.queue and not self.stop.requested:
                self.replacements -= 1
                self._start(1)
        else:
            self.idle.append(worker)
            if "worker_s" in result:
                self.overheads.append(time.perf_counter() - submitted - result["worker_s"])
        counts = result.get("counts") or {}
        self.frames_of_finished += counts.get("selected", 0)
        if self.run_.bar is not None:
            self.run_.bar.total += counts.get("selected", 0) - self.estimates[planned.bag.path]
        self.run_.finished(planned, result)

    def _show_progress(self) -> None:
        import ray

        bar = self.run_.bar
        if bar is None:
            return
        running = 0
        if self.busy:
            try:
                running = sum(ray.get([w.frames_done.remote() for w, _, _ in self.busy.values()], timeout=5))
            except ray.exceptions.RayError:
                pass  # a worker that died is reported when its bag returns
        states = [o.state for o in self.run_.outcomes.values()]
        shown = (self.frames_of_finished + running, bar.total, self.run_.count, states.count(FAILED))
        if shown != self.shown:  # redrawn on news only: a log file gets a line per change, not per poll
            self.shown = shown
            bar.n = shown[0]
            bar.set_postfix_str(f"bags {shown[2]}/{self.run_.total}" + (f", {shown[3]} failed" if shown[3] else ""),
                                refresh=True)

    def _record_timing(self) -> None:
        timing = self.run_.timing
        timing["workers_ready_s"] = max(self.ready_s) if self.ready_s else None
        timing["ray_overhead_per_bag_s"] = sum(self.overheads) / len(self.overheads) if self.overheads else None
        timing["evaluating_s"] = (self.last_return - self.first_hand_out
                                  if self.first_hand_out is not None and self.last_return is not None else None)

