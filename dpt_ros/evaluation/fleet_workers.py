"""Ray for evaluate_bags: the Ray instance a run uses, and its workers.

:class:`RaySession` starts a local Ray instance inside this process (the default: nothing to
install or start beyond the requirements), joins a cluster (``--ray-address``), or uses the
Ray a Python program has already initialised.  :class:`BagWorker` is a Ray actor: it loads one
model, once, and evaluates bag after bag with it through ``dpt_ros.evaluation.run.evaluate``,
reading each bag where it lies and writing its results into the output folder (paths every
worker can see).
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass

from dpt_ros.evaluation.config import EvaluationConfig, EvaluationError
from dpt_ros.evaluation.manifest import DONE, FAILED, INTERRUPTED

# The local instance only carries reports between processes: Ray's smallest object store will do.
LOCAL_OBJECT_STORE_BYTES = 100 * 2**20
# Calls into a busy worker (progress, stop) run beside its evaluation: threads of the actor.
WORKER_CONCURRENCY = 4


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a run goes (evaluate_bags' --ray-address, --workers, --cpus-per-worker,
    --gpus-per-worker)."""

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None  # None: one per worker when the model runs on a GPU

    def check(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise EvaluationError("--workers must be at least 1")
        if self.cpus_per_worker <= 0:
            raise EvaluationError("--cpus-per-worker must be greater than 0")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise EvaluationError("--gpus-per-worker must not be negative")


class RaySession:
    """The Ray instance of one run, as a context manager; ``start_s`` is how long joining or
    starting it took.  What this session started or joined it shuts down (or leaves) at the end;
    a Ray that was initialised before is left running."""

    def __init__(self, address: str | None):
        self.address = address
        self.owned = False
        self.temp_dir: str | None = None
        self.keep_logs = False
        self.start_s = 0.0
        self.description = ""

    def __enter__(self) -> "RaySession":
        import ray

        begin = time.perf_counter()
        if ray.is_initialized():
            self.description = "the Ray instance this program had initialised"
        elif self.address:
            _check_reachable(self.address)
            try:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
            except Exception as exc:  # ConnectionError, RuntimeError, ValueError, grpc errors ...
                raise EvaluationError(f"cannot join the Ray cluster at {self.address}: "
                                      f"{' '.join(str(exc).split()) or type(exc).__name__}"
                                      f"{_authentication_hint(exc)}") from None
            self.owned = True
            self.description = f"the Ray cluster at {self.address}"
        else:
            # No usage-statistics prompt or upload from an embedded instance (the user can still
            # say otherwise in the environment); sockets and logs in a short temporary folder
            # (Unix socket paths are limited to about 100 characters).
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            self.temp_dir = tempfile.mkdtemp(prefix="dpt_ray_")
            try:
                ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)),
                         object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False,
                         _temp_dir=self.temp_dir, log_to_driver=False, logging_level=logging.WARNING)
            except BaseException as exc:  # KeyboardInterrupt too: no half-started instance is left
                ray.shutdown()
                shutil.rmtree(self.temp_dir, ignore_errors=True)
                if not isinstance(exc, Exception):
                    raise
                raise EvaluationError(f"cannot start a local Ray instance: "
                                      f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
            self.owned = True
            self.description = "a local Ray instance"
        self.start_s = time.perf_counter() - begin
        return self

    def __exit__(self, *exc_info) -> None:
        import ray

        if self.owned:
            ray.shutdown()
        if self.temp_dir is not None and not self.keep_logs:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    @property
    def logs(self) -> str | None:
        """Where the local instance's logs are (kept when a worker died)."""
        return self.temp_dir

    def capacity(self, options: RayOptions) -> tuple[int, str]:
        """How many workers of ``options``' size the cluster holds, and its resources in words."""
        import ray

        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        fits = int(cpus // options.cpus_per_worker)
        if options.gpus_per_worker > 0:
            fits = min(fits, int(gpus // options.gpus_per_worker))
        return fits, f"{cpus:g} CPUs, {gpus:g} GPUs"


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """EvaluationError at once when nothing answers at HOST:PORT (Ray itself would retry for
    minutes); 'auto' and ray:// addresses are left to Ray."""
    if "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot join the Ray cluster at {address}: nothing answers there ({exc}); "
                              "start it with `ray start --head` on that machine") from None


def _authentication_hint(error: BaseException) -> str:
    """What to do when the cluster wants a token: Ray sends one to an address given explicitly only
    when told to (it does not hand the local token to any address)."""
    while error is not None:
        if "InvalidAuthToken" in str(error) or type(error).__name__ == "AuthenticationError":
            return ("; the cluster uses token authentication: set RAY_AUTH_MODE=token, and give its token in "
                    "RAY_AUTH_TOKEN or ~/.ray/auth_token (`ray get-auth-token` on the head prints it)")
        error = error.__cause__ or error.__context__
    return ""


def start_workers(options: RayOptions, model, count: int) -> list:
    """``count`` BagWorker actors, each reserving ``options``' CPUs and GPUs, with torch using
    as many threads as it has CPUs."""
    import ray

    actor = ray.remote(BagWorker).options(num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker,
                                          max_concurrency=WORKER_CONCURRENCY)
    threads = max(1, int(options.cpus_per_worker))
    return [actor.remote(model, threads) for _ in range(count)]


class BagWorker:
    """One model, loaded once by :meth:`load`, evaluating one bag per :meth:`evaluate` call.

    Runs as a Ray actor (see :func:`start_workers`); its methods are also plain Python, which
    the tests use.  Results are small dictionaries: a bag's full report is in its folder."""

    def __init__(self, model, threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.model = model
        self.engine = None
        self.warnings: list[str] = []
        self.stop_requested = threading.Event()
        self.frames = 0

    def load(self) -> dict:
        """Build the model; {"error": None, host, pid, device, load_s} or {"error": reason, host}."""
        from dpt_ros.model_config import ModelLoadError, build_engine

        begin = time.perf_counter()
        try:
            self.engine = build_engine(self.model, self.warnings.append)
        except ModelLoadError as exc:
            return {"error": " ".join(str(exc).split()), "host": socket.gethostname()}
        return {"error": None, "host": socket.gethostname(), "pid": os.getpid(), "device": str(self.engine.device),
                "load_s": time.perf_counter() - begin, "warnings": list(self.warnings)}

    def frames_done(self) -> int:
        """Frames finished of the bag being evaluated (the driver's progress bar)."""
        return self.frames

    def stop(self) -> None:
        """Finish the current frame, close the bag's outputs as interrupted and take no more bags."""
        self.stop_requested.set()

    def evaluate(self, config: EvaluationConfig) -> dict:
        """Evaluate one bag: {"state": done/failed/interrupted, "reason", counts, metrics, times}."""
        from dpt_ros.evaluation.bag_io import BagError
        from dpt_ros.evaluation.run import OUTCOME_INTERRUPTED, OUTCOME_NO_FRAME, evaluate
        from dpt_ros.model_config import ModelLoadError

        begin = time.perf_counter()
        self.frames = 0
        if self.stop_requested.is_set():
            return {"state": INTERRUPTED, "reason": "stopped before it started", "worker_s": 0.0}

        def after_frame(record: dict) -> None:
            self.frames += 1
            if self.stop_requested.is_set():
                raise KeyboardInterrupt  # evaluate() closes the bag and report as interrupted

        try:
            report = evaluate(config, engine=self.engine, after_frame=after_frame, engine_warnings=self.warnings)
        except (EvaluationError, BagError, ModelLoadError) as exc:  # refused before any work
            return {"state": FAILED, "reason": " ".join(str(exc).split()), "worker_s": time.perf_counter() - begin}
        except Exception as exc:  # a bug or an unexpected input: this bag fails, the others go on
            return {"state": FAILED, "reason": f"{type(exc).__name__}: {' '.join(str(exc).split())}",
                    "traceback": traceback.format_exc(), "worker_s": time.perf_counter() - begin}
        result = {"state": DONE, "reason": None, "counts": report["counts"], "depth": report["depth"],
                  "segmentation": report["segmentation"], "wall_s": report["timing"]["wall_s"],
                  "warnings": len(report["warnings"]), "host": socket.gethostname(),
                  "worker_s": time.perf_counter() - begin}
        if report["outcome"] == OUTCOME_INTERRUPTED:
            result.update(state=INTERRUPTED, reason="interrupted")
        elif report["outcome"] == OUTCOME_NO_FRAME:
            result.update(state=FAILED, reason=no_frame_reason(report))
        return result


def no_frame_reason(report: dict) -> str:
    """One line on why a run processed no frame (evaluate_bag prints the same on several lines)."""
    counts = report["counts"]
    reason = f"no frame was processed ({counts['selected']} selected, {counts['undecodable']} undecodable)"
    if report.get("empty_selection"):
        return f"{reason}: {report['empty_selection']}"
    reasons = sorted(report["undecodable_reasons"].items(), key=lambda item: -item[1])
    return f"{reason}: " + "; ".join(f"{count} x {text}" for text, count in reasons) if reasons else reason
