"""Turn a weights source (local file, HF hub directory, or URL) into a CPU state dict.

ROS-free and model-agnostic: this module only finds, downloads, verifies and deserialises
checkpoint files.  Matching the keys to a model is the loader's job (``load_weights``).

Downloads use the standard library only (urllib).  A download is written to a temporary file in
the cache directory and renamed into place only once it is complete and its sha256 matches the
prefix embedded in the official file name (torch.hub convention ``<name>-<hex>.pt``), so an
interrupted transfer never leaves a file that looks valid.  Cached files are re-hashed on every
use because a checkpoint that silently changed on disk is worse than a slow start.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import re
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import torch

from dpt_ros.model.errors import (
    WeightsHashMismatchError,
    WeightsLayoutError,
    WeightsNotFoundError,
    WeightsOfflineError,
    WeightsTruncatedError,
)

CACHE_ENV_VAR = "DPT_ROS_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/dpt_ros")

# Seconds without progress before a connection or read is abandoned.
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK_BYTES = 1 << 20
_PROGRESS_INTERVAL_S = 0.5

# "<anything>-<hex>.<ext>": the hex is a prefix of the file's sha256 (torch.hub convention,
# e.g. dpt_hybrid-midas-501f0c75.pt).  At least 8 digits so words like "-bad.pt" never match.
_NAME_HASH_PATTERN = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")

# File names of the Hugging Face hub layout, in order of preference (safetensors needs no pickle).
HF_SAFETENSORS_NAME = "model.safetensors"
HF_SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
HF_PICKLE_NAME = "pytorch_model.bin"

# Keys under which training scripts commonly nest the weights of an original-release checkpoint.
_WRAPPER_KEYS = ("state_dict", "model")


# --------------------------------------------------------------------------------------------
# Cache location and file-name conventions
# --------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$DPT_ROS_CACHE`` if set, else ``~/.cache/dpt_ros`` (read at call time, not import)."""
    configured = os.environ.get(CACHE_ENV_VAR)
    return Path(configured).expanduser() if configured else DEFAULT_CACHE_DIR.expanduser()


def file_name_from_url(url: str) -> str:
    """Last path component of ``url`` (percent-decoded); the name the cached copy gets."""
    name = urllib.parse.unquote(Path(urllib.parse.urlparse(url).path).name)
    if not name:
        raise ValueError(f"cannot derive a checkpoint file name from URL {url!r}")
    return name


def sha256_prefix_from_name(name: str) -> str | None:
    """The sha256 prefix encoded in an official checkpoint name, or None when there is none."""
    match = _NAME_HASH_PATTERN.search(Path(name).name)
    return match.group(1) if match else None


def cached_path(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``download_checkpoint(url)`` stores (or would store) its file."""
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return directory / file_name_from_url(url)


def is_url(source: str | os.PathLike) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------
def download_checkpoint(
    url: str,
    cache_dir: str | os.PathLike | None = None,
    expected_sha256_prefix: str | None = None,
    progress: bool = True,
) -> Path:
    """Return the path of a verified local copy of ``url``, downloading it at most once.

    The expected sha256 prefix is ``expected_sha256_prefix`` if given, else the one in the file
    name (``name-<hex>.pt``); names without one are not verified.  A cached copy whose hash no
    longer matches is removed and downloaded again.

    Raises WeightsOfflineError (unreachable host, HTTP error), WeightsTruncatedError (fewer bytes
    than Content-Length) and WeightsHashMismatchError (digest differs; the file is removed).
    """
    target = cached_path(url, cache_dir)
    expected = (expected_sha256_prefix or sha256_prefix_from_name(target.name) or "").lower()
    stale_note = ""
    if target.is_file():
        if not expected:
            return target
        actual = file_sha256(target)
        if actual.startswith(expected):
            return target
        # A corrupted or replaced cache entry: drop it and fetch a fresh copy.
        target.unlink(missing_ok=True)
        stale_note = (
            f" (a cached copy at {target} had sha256 {actual}, not starting with {expected}, "
            "and was removed)"
        )
        _log(f"dpt_ros: cached {target.name} failed verification; downloading it again")

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = _fetch_to_temporary_file(url, target, progress, stale_note)
    try:
        if expected:
            actual = file_sha256(partial)
            if not actual.startswith(expected):
                raise WeightsHashMismatchError(
                    f"sha256 mismatch for {url}: expected a digest starting with {expected}, "
                    f"got {actual}. The downloaded file was removed; the server may be serving a "
                    "different file than the official release"
                )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _fetch_to_temporary_file(url: str, target: Path, progress: bool, stale_note: str) -> Path:
    """Stream ``url`` into a temporary file next to ``target``; return it when complete."""
    offline_advice = (
        f"If this machine has no network access, download the file elsewhere and place it at "
        f"{target}, or pass its local path as the weights source{stale_note}."
    )
    request = urllib.request.Request(url, headers={"User-Agent": "dpt_ros"})
    try:
        response = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        raise WeightsOfflineError(
            f"cannot download {url}: HTTP {error.code} {error.reason}. {offline_advice}"
        ) from error
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise WeightsOfflineError(
            f"cannot download {url}: host unreachable ({reason}). {offline_advice}"
        ) from error

    handle, temporary_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
    )
    partial = Path(temporary_name)
    try:
        with response, os.fdopen(handle, "wb") as sink:
            announced = _content_length(response)
            received = _copy_with_progress(response, sink, announced, target.name, progress)
        if announced is not None and received != announced:
            raise WeightsTruncatedError(
                f"download of {url} is truncated: Content-Length announced {announced} bytes, "
                f"received {received}. The partial file was removed; try again. {offline_advice}"
            )
    except WeightsTruncatedError:
        partial.unlink(missing_ok=True)
        raise
    except (OSError, http.client.HTTPException) as error:
        partial.unlink(missing_ok=True)
        raise WeightsTruncatedError(
            f"download of {url} was interrupted ({error!r}); the partial file was removed. "
            f"{offline_advice}"
        ) from error
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return partial


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _copy_with_progress(response, sink, announced: int | None, name: str, progress: bool) -> int:
    """Copy the body to ``sink``; return the byte count.  Progress is one rewritten stderr line."""
    received = 0
    last_report = 0.0
    try:
        while True:
            try:
                chunk = response.read(_CHUNK_BYTES)
            except http.client.IncompleteRead as error:
                # Some Python versions raise instead of returning short; keep what arrived so
                # the error reports the real byte count.
                sink.write(error.partial)
                received += len(error.partial)
                break
            if not chunk:
                break
            sink.write(chunk)
            received += len(chunk)
            now = time.monotonic()
            if progress and now - last_report >= _PROGRESS_INTERVAL_S:
                last_report = now
                _report_progress(name, received, announced, final=False)
    except socket.timeout as error:
        raise WeightsTruncatedError(
            f"download of {name} stalled for {DOWNLOAD_TIMEOUT_S:.0f} s after {received} bytes"
        ) from error
    if progress:
        _report_progress(name, received, announced, final=True)
    return received


def _report_progress(name: str, received: int, announced: int | None, final: bool) -> None:
    mib = received / (1 << 20)
    if announced:
        text = f"{mib:8.1f} / {announced / (1 << 20):.1f} MiB ({100.0 * received / announced:5.1f}%)"
    else:
        text = f"{mib:8.1f} MiB"
    sys.stderr.write(f"\rdpt_ros: downloading {name}: {text}" + ("\n" if final else ""))
    sys.stderr.flush()


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")


# --------------------------------------------------------------------------------------------
# Reading state dicts
# --------------------------------------------------------------------------------------------
def read_state_dict(
    source: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    expected_sha256_prefix: str | None = None,
) -> dict[str, torch.Tensor]:
    """Load a checkpoint into a ``{name: tensor}`` dict on the CPU.

    ``source`` is one of: an http(s) URL (downloaded into the cache and verified against
    ``expected_sha256_prefix`` or the prefix in its file name, see download_checkpoint);
    a Hugging Face hub directory (``model.safetensors``, a sharded
    ``model.safetensors.index.json``, or ``pytorch_model.bin``); a single ``.safetensors`` file;
    or an original-release ``.pt``/``.pth`` (loaded with ``weights_only=True``; a
    ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped).
    """
    if is_url(source):
        return _read_file(download_checkpoint(str(source), cache_dir, expected_sha256_prefix))
    path = Path(source).expanduser()
    if not path.exists():
        raise WeightsNotFoundError(f"weights source {str(path)!r} does not exist")
    if path.is_dir():
        return _read_hub_directory(path)
    return _read_file(path)


def _read_hub_directory(directory: Path) -> dict[str, torch.Tensor]:
    single = directory / HF_SAFETENSORS_NAME
    if single.is_file():
        return _read_file(single)
    index = directory / HF_SAFETENSORS_INDEX_NAME
    if index.is_file():
        return _read_sharded_safetensors(index)
    pickle_file = directory / HF_PICKLE_NAME
    if pickle_file.is_file():
        return _read_file(pickle_file)
    present = sorted(entry.name for entry in directory.iterdir())
    raise WeightsNotFoundError(
        f"directory {str(directory)!r} holds no checkpoint: expected {HF_SAFETENSORS_NAME}, "
        f"{HF_SAFETENSORS_INDEX_NAME} or {HF_PICKLE_NAME} (Hugging Face hub layout); "
        f"found {present or 'nothing'}. Pass a .pt/.safetensors file path directly otherwise"
    )


def _read_sharded_safetensors(index: Path) -> dict[str, torch.Tensor]:
    import json

    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as error:
        raise WeightsTruncatedError(f"cannot parse shard index {index}: {error}") from error
    state: dict[str, torch.Tensor] = {}
    for shard_name in dict.fromkeys(weight_map.values()):
        shard = index.parent / shard_name
        if not shard.is_file():
            raise WeightsNotFoundError(f"shard {shard_name!r} listed in {index} is missing")
        state.update(_read_file(shard))
    return state


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        loaded = _load_safetensors(path)
    else:
        loaded = _load_pickle(path)
    return _as_tensor_dict(_unwrap(loaded), path)


def _load_safetensors(path: Path):
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # SafetensorError is not exported as a stable type
        raise WeightsTruncatedError(
            f"cannot deserialise safetensors file {path} ({error}); it is probably truncated "
            "or corrupt: delete it and download it again"
        ) from error


def _load_pickle(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses arbitrary objects; a clean message beats torch's long hint.
        raise WeightsTruncatedError(
            f"cannot deserialise {path}: it is not a plain tensor checkpoint loadable with "
            f"weights_only=True, or it is corrupt ({str(error).splitlines()[0]})"
        ) from error
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise WeightsTruncatedError(
            f"cannot deserialise {path} ({str(error).splitlines()[0] if str(error) else error!r}); "
            "the file is probably truncated or corrupt: delete it and download it again"
        ) from error


def _unwrap(loaded):
    """Descend through ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers (any depth)."""
    while isinstance(loaded, dict) and not _is_tensor_mapping(loaded):
        inner = next(
            (loaded[key] for key in _WRAPPER_KEYS if isinstance(loaded.get(key), dict)), None
        )
        if inner is None:
            break
        loaded = inner
    return loaded


def _is_tensor_mapping(value) -> bool:
    return isinstance(value, dict) and all(
        isinstance(key, str) and isinstance(item, torch.Tensor) for key, item in value.items()
    )


def _as_tensor_dict(loaded, path: Path) -> dict[str, torch.Tensor]:
    if not _is_tensor_mapping(loaded) or not loaded:
        if isinstance(loaded, dict):
            offending = [key for key, item in loaded.items() if not isinstance(item, torch.Tensor)]
            detail = f"non-tensor entries {offending[:5]}" if offending else "no entries"
        else:
            detail = f"a {type(loaded).__name__}"
        raise WeightsLayoutError(
            f"{path} does not hold a state dict of named tensors: found {detail} "
            f"(wrappers looked through: {', '.join(_WRAPPER_KEYS)})"
        )
    return dict(loaded)
