"""Errors raised while resolving and loading DPT weights.

Each failure mode has its own class so callers (the node, the bag evaluator, tests) can tell
them apart and print an actionable message.
"""


class WeightsError(RuntimeError):
    """Base class of every weight resolution or loading failure."""


class WeightsNotFoundError(WeightsError):
    """A local path that does not exist or holds no recognised checkpoint file."""


class WeightsOfflineError(WeightsError):
    """The checkpoint is not cached and cannot be downloaded (no network, HTTP error)."""


class WeightsHashMismatchError(WeightsError):
    """The downloaded or cached file does not match the sha256 prefix of its official name."""


class WeightsTruncatedError(WeightsError):
    """The file is shorter than announced or cannot be deserialised (interrupted download)."""


class WeightsLayoutError(WeightsError):
    """The state dict does not match the model: missing/unexpected keys or shape mismatches."""
