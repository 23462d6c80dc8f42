"""DPT (Dense Prediction Transformer) and Depth Anything V2 (DPT on DINOv2) on timm, free of ROS.

    from dpt_ros.model import build_model, VARIANTS
    model = build_model("dpt_hybrid", "depth", weights="auto")  # official release file, eval mode
    inverse_depth = model(batch)                                # (B, H, W) at the input's H, W
    metres = build_model("depth_anything_v2_metric_hypersim_vits", weights="auto")(batch)

``VARIANTS`` maps names to :class:`VariantSpec` (backbone, decoder) whose ``tasks`` map
"depth" / "segmentation" to :class:`TaskSpec` (network input size, resize rule, normalization,
output kind, official checkpoint and its licence).  Weights load from the original release
layout, the Hugging Face hub layout or ours (:func:`load_weights`), and export to the published
layouts with :func:`to_original_state_dict` / :func:`to_hf_state_dict`.
"""
from . import checkpoint_layouts
from .build import build_model, load_weights
from .dpt import DPT, INPUT_MULTIPLE
from .errors import WeightsError, WeightsLayoutError, WeightsNotFoundError
from .variants import (
    DEPTH,
    LOGITS,
    METRIC_DEPTH,
    RELATIVE_INVERSE_DEPTH,
    SEGMENTATION,
    TASKS,
    VARIANTS,
    BackboneSpec,
    ModelSpec,
    TaskSpec,
    VariantSpec,
    get_model_spec,
    get_variant,
)


def to_original_state_dict(model: DPT) -> dict:
    """The model's weights with the key set and shapes of the original release files (DPT's
    ``.pt``, Depth Anything V2's ``.pth``)."""
    return checkpoint_layouts.to_layout(model.state_dict(), model.spec, checkpoint_layouts.ORIGINAL)


def to_hf_state_dict(model: DPT) -> dict:
    """The model's weights in the Hugging Face hub layout (transformers' DPT or DepthAnything
    classes, as the hub files name them)."""
    return checkpoint_layouts.to_layout(model.state_dict(), model.spec, checkpoint_layouts.HF)


__all__ = [
    "BackboneSpec",
    "DEPTH",
    "DPT",
    "INPUT_MULTIPLE",
    "LOGITS",
    "METRIC_DEPTH",
    "ModelSpec",
    "RELATIVE_INVERSE_DEPTH",
    "SEGMENTATION",
    "TASKS",
    "TaskSpec",
    "VARIANTS",
    "VariantSpec",
    "WeightsError",
    "WeightsLayoutError",
    "WeightsNotFoundError",
    "build_model",
    "checkpoint_layouts",
    "get_model_spec",
    "get_variant",
    "load_weights",
    "to_hf_state_dict",
    "to_original_state_dict",
]
