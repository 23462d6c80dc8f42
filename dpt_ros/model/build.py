"""Building a DPT variant and loading weights into it from any published layout."""
from __future__ import annotations

import os
from typing import Mapping, Optional, Union

import torch

from . import checkpoint_layouts as layouts
from .dpt import DPT
from .errors import WeightsNotFoundError
from .random_init import randomize_
from .variants import DEPTH, ModelSpec, VariantSpec, get_model_spec
from .weights_source import read_state_dict

WeightsSource = Union[None, str, os.PathLike, Mapping[str, torch.Tensor]]


def read_weights(source) -> Mapping[str, torch.Tensor]:
    """A state dict from a mapping (returned as is) or a path/URL/directory."""
    if isinstance(source, Mapping):
        return source
    return read_state_dict(source)


def load_weights(model: DPT, source) -> DPT:
    """Load weights in any layout (ours, original release, HF hub) into ``model``, strictly.

    ``source``: a state dict, or a path / URL / directory read by
    ``dpt_ros.model.weights_source.read_state_dict``.  The layout is detected from the keys and
    converted; any missing, unexpected or mis-shaped tensor raises ``WeightsLayoutError``.
    The values are copied into the model's own tensors (cast to their dtype).
    """
    state_dict = read_weights(source)
    layout = layouts.detect_layout(state_dict)
    converted = layouts.from_layout(state_dict, model.spec, layout, model.state_dict())
    model.load_state_dict(converted, strict=True)
    return model


def build_model(
    variant: Union[str, VariantSpec, ModelSpec],
    task: str = DEPTH,
    weights: WeightsSource = None,
    *,
    seed: int = 0,
    device: Union[None, str, torch.device] = None,
    dtype: Optional[torch.dtype] = None,
) -> DPT:
    """The ``task`` network ("depth" or "segmentation") of a variant, in eval mode with gradients
    disabled (``variant`` may also be a :class:`ModelSpec`, which names its task itself).

    ``weights``: None for random weights (:func:`~dpt_ros.model.random_init.randomize_` with
    ``seed``: deterministic, outputs that vary across the image), ``"auto"`` for the official
    checkpoint (``VARIANTS[variant].tasks[task].checkpoint_url``, downloaded once into the cache and
    checked against the variant's ``sha256_prefix`` where one is known), or anything
    :func:`load_weights` accepts.
    """
    spec = get_model_spec(variant, task)
    # Either way every tensor is set below: build without initializing (timm's and torch's
    # initialization of DPT-Large alone takes seconds).
    with torch.device("meta"):
        model = DPT(spec)
    model = model.to_empty(device="cpu")
    if weights is None:
        randomize_(model, seed)
    else:
        if isinstance(weights, str) and weights == "auto":
            if spec.task.checkpoint_url is None:
                raise WeightsNotFoundError(
                    f"variant {spec.variant.name!r} has no official {spec.task.task} checkpoint; give a "
                    "weights file or URL, or build it with random weights (weights=None)"
                )
            weights = read_state_dict(spec.task.checkpoint_url, expected_sha256_prefix=spec.task.sha256_prefix)
        # Copied, not adopted: tensors memory-mapped from a file can be misaligned, which changes
        # the CPU kernels chosen (and their rounding), and the caller's tensors stay its own.
        load_weights(model, read_weights(weights))
    model = model.to(device=device, dtype=dtype)
    model.requires_grad_(False)
    return model.eval()
