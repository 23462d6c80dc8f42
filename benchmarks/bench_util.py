"""Small helpers shared by the benchmark scripts: percentiles, plain-text tables, import path,
and for the scripts that run dpt_node across processes (node.py, multi_camera.py): the DDS
environment, the node's parameters, and starting / stopping child processes.

The scripts run as ``python benchmarks/<name>.py``; Python then puts ``benchmarks/`` first on
``sys.path``, not the repository root, so :func:`use_checkout` puts the checkout's ``dpt_ros``
ahead of the colcon install space (whose copy may be older): benchmarks measure the code in the
working tree.  ``dpt_ros.msg`` is still found in the install space (``dpt_ros/__init__.py``
extends the package path).
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
PEERS = Path(__file__).resolve().with_name("node_peers.py")
NODE_EXECUTABLE = REPO / "install" / "dpt_ros" / "lib" / "dpt_ros" / "dpt_node"
# Metric depth from the relative output: 1 / (scale * out + shift) metres.  With random weights
# the output is of order one, so depths land between a few metres and ~10 m.
DEPTH_SCALE, DEPTH_SHIFT = 0.05, 0.1


def use_checkout() -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics
    (numpy's default method); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Right-aligned plain-text columns (first column left-aligned), one header line and a rule."""
    cells = [[str(h) for h in headers]] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(value.ljust(width) if i == 0 else value.rjust(width)
                         for i, (value, width) in enumerate(zip(row, widths)))

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0.0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.2e}"
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def alternate(functions: dict, runs: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call of each function, calls interleaved round-robin (so that load from
    other processes falls on all of them alike)."""
    times = {name: [] for name in functions}
    for index in range(warmup + runs):
        for name, fn in functions.items():
            started = time.perf_counter()
            fn()
            if index >= warmup:
                times[name].append((time.perf_counter() - started) * 1e3)
    return times


@contextlib.contextmanager
def busy_processes(count: int):
    """``count`` busy-looping Python processes for the duration of the block: the load of a
    robot's other software on the cores, made on purpose."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


# ------------------------------------------------------------------ dpt_node across processes
def default_device(device: str | None) -> str:
    """--device left out: cuda when torch sees one, else cpu."""
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def benchmark_device(parser, device: str | None) -> str:
    """:func:`default_device`, and asking for cuda where torch sees none is a usage error (through
    ``parser``, before anything is built)."""
    import torch

    device = default_device(device)
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    return device


def ros_environment(domain_id: int | None, fastdds_profile: str | None) -> tuple[dict, str]:
    """The environment of every child process and a one-line description of it.

    A random ROS_DOMAIN_ID (unless given) and discovery limited to this host keep a benchmark
    from talking to anything else; the checkout's ``dpt_ros`` goes first on PYTHONPATH so the
    installed dpt_node runs the working tree's code.  Raises FileNotFoundError for a missing
    Fast DDS profile."""
    domain = domain_id if domain_id is not None else random.randint(1, 100)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    if fastdds_profile:
        profile = Path(fastdds_profile).resolve()
        if not profile.is_file():
            raise FileNotFoundError(f"no Fast DDS profile {profile}")
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)
    profile_name = Path(env["FASTRTPS_DEFAULT_PROFILES_FILE"]).name if env.get("FASTRTPS_DEFAULT_PROFILES_FILE") \
        else "none"
    return env, f"ROS_DOMAIN_ID={domain} ({env.get('RMW_IMPLEMENTATION', 'default rmw')}, profile {profile_name})"


def output_topics(variant: str, tasks: str) -> list[str]:
    """dpt_node's outputs for this configuration (relative to its namespace or camera), with the
    metric depth that :func:`node_parameters` turns on."""
    from dpt_ros.model import VARIANTS

    topics = []
    if tasks in ("depth", "both"):
        topics += ["depth/image", "depth/camera_info", "depth/colored", "points"]
        if VARIANTS[variant].tasks["depth"].output_kind != "metric_depth":
            topics.append("depth/relative")
    if tasks in ("segmentation", "both"):
        topics += ["segmentation/labels", "segmentation/colored"]
    return topics


def node_parameters(args) -> dict[str, str]:
    """dpt_node parameters from a benchmark's --variant/--weights/--tasks/--device/--precision/
    --compile/--input-size: random weights unless given, metric depth through depth.scale/shift, every
    output enabled (only the subscribed ones are computed), reliable input (frames are paced by
    the benchmark's publisher, so none should be lost on the way)."""
    return {
        "model.variant": args.variant, "model.weights": args.weights or "''",
        "model.segmentation_weights": args.weights or "''", "model.allow_random_weights": "true",
        "model.tasks": args.tasks, "device": args.device, "precision": args.precision,
        "compile": args.compile, "input_size": str(args.input_size), "depth.scale": str(DEPTH_SCALE), "depth.shift": str(DEPTH_SHIFT),
        "qos.input.reliability": "reliable", "colored.enabled": "true", "cloud.enabled": "true",
    }


COMPILE_HELP = ("dpt_node's compile parameter: off, torch_compile or cuda_graph (the first frame of each size "
                "compiles or captures: give warm-up frames and a long --frame-timeout)")


def node_command(namespace: str, params: dict[str, str], node_name: str | None = None) -> list[str]:
    """The installed dpt_node's command line in ``namespace`` (optionally renamed)."""
    ros_args = ["-r", f"__ns:={namespace}"] + (["-r", f"__node:={node_name}"] if node_name else [])
    for name, value in params.items():
        ros_args += ["-p", f"{name}:={value}"]
    return [str(NODE_EXECUTABLE), "--ros-args"] + ros_args


def prepare_run(args, prefix: str):
    """What every node benchmark starts with: the installed dpt_node must exist, the DDS
    environment (``args.domain_id``, ``args.fastdds_profile``) is built, the records folder
    (``args.keep`` or a new temporary one) is made.  Returns (env, dds description, folder), or None
    after printing why the run cannot start."""
    if not NODE_EXECUTABLE.exists():
        print(f"no {NODE_EXECUTABLE}: run `make setup` (colcon build) first", file=sys.stderr)
        return None
    try:
        env, dds = ros_environment(args.domain_id, args.fastdds_profile)
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return None
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix=prefix))
    folder.mkdir(parents=True, exist_ok=True)
    return env, dds, folder


class Processes:
    """Child processes with their logs; stopped (SIGINT, then kill) in reverse order on exit."""

    def __init__(self, folder: Path, env: dict):
        self.folder, self.env, self.children = folder, env, []

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.children.append((name, process))
        return process

    def start_peer(self, name: str, role_args: list[str]) -> subprocess.Popen:
        """A benchmarks/node_peers.py process (publisher, subscriber, ...)."""
        return self.start(name, [sys.executable, str(PEERS)] + role_args)

    def run_peer(self, name: str, role_args: list[str], timeout: float,
                 watch: dict[str, subprocess.Popen] | None = None) -> int:
        """A node_peers.py process run to its end; RuntimeError (with its log) when it overruns, or
        at once when one of the ``watch`` processes (log name -> process, e.g. the dpt_nodes it
        talks to) exits first: a node that cannot start fails the run with its own error."""
        process = self.start_peer(name, role_args)
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            for watched_name, watched in (watch or {}).items():
                if watched.poll() is not None:
                    self.stop(process)
                    raise RuntimeError(f"{watched_name} exited with {watched.returncode} while {name} ran\n"
                                       f"{self.log(watched_name)}")
            if time.monotonic() > deadline:
                self.stop(process)
                raise RuntimeError(f"{name} did not finish in {timeout:.0f} s\n{self.log(name)}")
            time.sleep(0.2)
        return process.returncode

    def log(self, name: str, lines: int = 30) -> str:
        text = (self.folder / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(f"  [{name}] {line}" for line in text[-lines:])

    @staticmethod
    def stop(process: subprocess.Popen, timeout: float = 20.0) -> int:
        from dpt_ros.processes import stop_process

        return stop_process(process, timeout)

    def stop_all(self) -> None:
        for _, process in reversed(self.children):
            self.stop(process)
