"""The manifest of an evaluate_bags output folder, and what a run does with it.

For each bag (by absolute path) the manifest keeps the fingerprint it had (size, modification
time), the hash of the configuration it was evaluated with, and how that ended: done, failed (with
the reason), interrupted, or running (a run that died before it could say).  A re-run skips a bag
that is done with the same fingerprint and configuration and whose results are still there, and
evaluates every other one again.  The manifest is replaced atomically (a temporary file renamed
over it), so a crash or Ctrl-C at any moment leaves the previous or the next consistent state.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from dpt_ros.evaluation.config import EvaluationConfig, EvaluationError
from dpt_ros.evaluation.fleet_inputs import BagInput, fingerprint

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
# Inside an output folder: DIR/<bag name>/ holds one bag's report and, under this name, its output bag.
OUTPUT_BAG_DIRNAME = "output_bag"
PER_BAG_REPORT = "report.json"

DONE, FAILED, INTERRUPTED, RUNNING = "done", "failed", "interrupted", "running"
STATES = (DONE, FAILED, INTERRUPTED, RUNNING)

# Why a bag is evaluated or skipped (printed and kept in the fleet report).
NEW = "new"
DONE_BEFORE = "done before"
CHANGED = "changed since it was evaluated"
CONFIGURATION_CHANGED = "evaluated with other options"
FAILED_BEFORE = "failed before"
UNFINISHED_BEFORE = "not finished before"
RESULTS_MISSING = "its results are missing"


@dataclass
class ManifestEntry:
    name: str
    size: int
    mtime_ns: int
    configuration_hash: str
    state: str
    reason: str | None = None
    frames_processed: int | None = None
    updated: str = ""


class Manifest:
    """The entries of one output folder's manifest.json; :meth:`record` saves after each change."""

    def __init__(self, path: Path, entries: dict[Path, ManifestEntry] | None = None):
        self.path = Path(path)
        self.entries: dict[Path, ManifestEntry] = dict(entries or {})

    @classmethod
    def load(cls, output_dir: Path) -> "Manifest":
        """The output folder's manifest (empty when there is none); EvaluationError when it
        exists but cannot be read."""
        path = Path(output_dir) / MANIFEST_NAME
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text())
            if data.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {MANIFEST_FORMAT}")
            entries = {Path(bag): ManifestEntry(**entry) for bag, entry in data["bags"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EvaluationError(f"cannot read {path} ({type(exc).__name__}: {exc}); remove it to evaluate "
                                  "every bag again") from None
        return cls(path, entries)

    def record(self, bag: BagInput, configuration_hash: str, state: str, reason: str | None = None,
               frames_processed: int | None = None) -> None:
        """Set a bag's entry and save the manifest."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        self.entries[bag.path] = ManifestEntry(
            name=bag.name, size=bag.size, mtime_ns=bag.mtime_ns, configuration_hash=configuration_hash,
            state=state, reason=reason, frames_processed=frames_processed,
            updated=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        self.save()

    def save(self) -> None:
        """Write the manifest atomically: a temporary file in the same folder, flushed to disk,
        then renamed over manifest.json."""
        data = {"format": MANIFEST_FORMAT,
                "bags": {str(path): asdict(entry) for path, entry in sorted(self.entries.items())}}
        handle, temporary = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w") as stream:
                json.dump(data, stream, indent=1)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)

    def names(self) -> dict[Path, str]:
        return {path: entry.name for path, entry in self.entries.items()}


def configuration_hash(config: EvaluationConfig) -> str:
    """What makes one bag's results differ from another run's, apart from the bag: every
    setting but the per-bag locations, whether an output bag is written, and the size and
    modification time of the files the settings name (weights, label map)."""
    settings = config.to_json()
    for per_bag in ("input_bag", "report_dir", "progress"):
        settings.pop(per_bag)
    settings["output_bag"] = config.output_bag is not None
    files = {}
    for key, value in (("weights", config.model.weights), ("segmentation_weights", config.model.segmentation_weights),
                       ("gt_label_map", config.gt_label_map)):
        if value and os.path.exists(value):
            files[key] = list(fingerprint(Path(value)))
    text = json.dumps({"settings": settings, "files": files}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PlannedBag:
    bag: BagInput
    evaluate: bool
    why: str


def plan(bags: list[BagInput], manifest: Manifest, config_hash: str, output_dir: Path,
         output_bags: bool) -> list[PlannedBag]:
    """For each bag: evaluate it, or skip it because it is done (see the module's docstring)."""
    planned = []
    for bag in bags:
        entry = manifest.entries.get(bag.path)
        if entry is None:
            why = NEW
        elif entry.state == FAILED:
            why = FAILED_BEFORE
        elif entry.state != DONE:
            why = UNFINISHED_BEFORE
        elif (entry.size, entry.mtime_ns) != (bag.size, bag.mtime_ns):
            why = CHANGED
        elif entry.configuration_hash != config_hash:
            why = CONFIGURATION_CHANGED
        elif not _results_exist(Path(output_dir) / bag.name, output_bags):
            why = RESULTS_MISSING
        else:
            why = DONE_BEFORE
        planned.append(PlannedBag(bag, why != DONE_BEFORE, why))
    return planned


def _results_exist(bag_dir: Path, output_bags: bool) -> bool:
    return (bag_dir / PER_BAG_REPORT).is_file() and (not output_bags or (bag_dir / OUTPUT_BAG_DIRNAME).is_dir())
