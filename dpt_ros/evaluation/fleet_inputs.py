"""The bags of an evaluate_bags run: found from bags, directories and glob patterns, named for
their output folders and fingerprinted (size, modification time) for the manifest.

A rosbag2 bag is a directory holding metadata.yaml, or a single .mcap/.db3 storage file (what
``rosbags`` reads).  A directory without metadata.yaml is searched: every bag below it is taken,
and nothing inside a bag is searched further.  Paths are made absolute, because Ray workers on
other machines read the bags where they lie.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from dpt_ros.evaluation.config import EvaluationError

BAG_FILE_SUFFIXES = (".mcap", ".db3")
BAG_METADATA = "metadata.yaml"
# Separates the parent folders that make two bags of the same name distinct ("robot1__bag").
NAME_SEPARATOR = "__"


@dataclass(frozen=True)
class BagInput:
    """One bag to evaluate: where it lies, its output folder's name and its fingerprint."""

    path: Path
    name: str
    size: int
    mtime_ns: int


def find_bags(inputs: Sequence[str], exclude: Path | None = None) -> list[Path]:
    """The bags named by ``inputs`` (bags, directories to search, glob patterns), each once, in
    the order given (a directory's and a pattern's bags sorted by path).

    ``exclude`` (the output folder) is never searched, so the output bags of an earlier run
    are not taken for inputs.  EvaluationError (one line) for an input that names nothing: a
    missing path, a pattern that matches nothing, a file or directory that holds no bag."""
    exclude = Path(os.path.abspath(exclude)) if exclude is not None else None
    found: dict[Path, None] = {}
    for given in inputs:
        if glob.has_magic(given):
            matches = sorted(glob.glob(os.path.expanduser(given), recursive=True))
            if not matches:
                raise EvaluationError(f"no file or directory matches {given!r}")
            bags = [bag for match in matches for bag in _bags_at(Path(match), exclude, explicit=False)]
        else:
            path = Path(os.path.expanduser(given))
            if not path.exists():
                raise EvaluationError(f"input {given} does not exist")
            bags = _bags_at(path, exclude, explicit=True)
        if not bags:
            raise EvaluationError(f"no rosbag2 bag (a directory with {BAG_METADATA}, or a "
                                  f"{'/'.join(BAG_FILE_SUFFIXES)} file) in {given}")
        found.update(dict.fromkeys(bags))
    return list(found)


def _bags_at(path: Path, exclude: Path | None, explicit: bool) -> list[Path]:
    path = Path(os.path.abspath(path))
    if exclude is not None and (path == exclude or exclude in path.parents):
        return []
    if path.is_file():
        if path.suffix not in BAG_FILE_SUFFIXES:
            if explicit:
                raise EvaluationError(f"{path} is not a rosbag2 bag (expected a directory with "
                                      f"{BAG_METADATA} or a {'/'.join(BAG_FILE_SUFFIXES)} file)")
            return []
        # A storage file of a bag directory (e.g. matched by "**/*.mcap") stands for its bag.
        return [path.parent if (path.parent / BAG_METADATA).is_file() else path]
    if (path / BAG_METADATA).is_file():
        return [path]
    bags = []
    for directory, subdirectories, files in os.walk(path):
        here = Path(directory)
        subdirectories.sort()
        if exclude is not None and (here == exclude or exclude in here.parents):
            subdirectories.clear()
            continue
        if BAG_METADATA in files:
            bags.append(here)
            subdirectories.clear()  # a bag's own folders are part of it
            continue
        bags += [here / name for name in sorted(files) if Path(name).suffix in BAG_FILE_SUFFIXES]
    return bags


def fingerprint(path: Path) -> tuple[int, int]:
    """(size in bytes, newest modification time in ns) of a file, or of a directory and every
    file below it: a bag that is re-recorded, appended to, or has a file replaced changes it."""
    stat = path.stat()
    if not path.is_dir():
        return stat.st_size, stat.st_mtime_ns
    size, mtime_ns = 0, stat.st_mtime_ns
    for directory, _, files in os.walk(path):
        mtime_ns = max(mtime_ns, os.stat(directory).st_mtime_ns)
        for name in files:
            file_stat = os.stat(os.path.join(directory, name))
            size += file_stat.st_size
            mtime_ns = max(mtime_ns, file_stat.st_mtime_ns)
    return size, mtime_ns


def bag_name(path: Path) -> str:
    """A bag's own name: its directory's, or its storage file's without the suffix."""
    return path.name if path.is_dir() else path.stem


def assign_names(bags: Sequence[Path], known: dict[Path, str], taken: Iterable[str]) -> dict[Path, str]:
    """Output folder names, unique within the output folder, that stay the same across runs.

    ``known`` are the names earlier runs gave (from the manifest) and keep; ``taken`` are other
    names in use (other bags' in the manifest, files and folders of the output folder).  A new
    bag gets its own name, or when another bag has it, its parent folders' names in front
    ("robot1__2026-05-01") until it is unique, and a number as the last resort."""
    names: dict[Path, str] = {}
    used = set(taken) | {name for path, name in known.items() if path not in bags}
    for bag in bags:
        if bag in known and known[bag] not in used:
            names[bag] = known[bag]
            used.add(known[bag])
    for bag in bags:
        if bag in names:
            continue
        candidates = [NAME_SEPARATOR.join([*(p.name for p in reversed(bag.parents[:depth]) if p.name),
                                           bag_name(bag)]) for depth in range(len(bag.parents))]
        name = next((c for c in candidates if c not in used), None)
        number = 2
        while name is None or name in used:
            name = f"{candidates[0]}{NAME_SEPARATOR}{number}"
            number += 1
        names[bag] = name
        used.add(name)
    return names
