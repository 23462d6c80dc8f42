"""What model to run and how, and the one builder from that to an inference engine (ROS-free).

dpt_node and the offline evaluators describe their model with the same ModelConfig and build it
with the same build_engine, so they share defaults, the random-weights rule and the choice of the
segmentation model for a depth variant.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


class ModelLoadError(RuntimeError):
    """The model could not be built or its weights could not be loaded (the message says why)."""


@dataclass(frozen=True)
class ModelConfig:
    variant: str
    weights: str = "auto"
    allow_random_weights: bool = False
    tasks: tuple[str, ...] = ("depth",)
    segmentation_variant: str = ""
    segmentation_weights: str = "auto"
    device: str = "auto"
    precision: str = "fp32"
    compile: str = "eager"
    input_size: int = 0


def segmentation_variant_for(variant: str) -> str | None:
    """What an empty segmentation variant means: the variant whose segmentation model shares
    ``variant``'s backbone (the metric variants dpt_hybrid_kitti/nyu have no segmentation head of
    their own, so dpt_hybrid's is used), or None when no published model does (Depth Anything V2
    was released for depth only)."""
    from dpt_ros.model import VARIANTS

    spec = VARIANTS[variant]
    if "segmentation" in spec.tasks:
        return variant
    for name, other in VARIANTS.items():
        if other.backbone == spec.backbone and "segmentation" in other.tasks:
            return name
    return None


def build_engine(config: ModelConfig, warn: Callable[[str], None] = print):
    """The inference engine for ``config``; raises ModelLoadError with an actionable message.

    Empty weights mean random initialisation, refused unless ``allow_random_weights`` (a model
    that silently runs untrained weights publishes plausible-looking garbage)."""
    from dpt_ros.inference import InferenceEngine

    def weights_of(value: str, what: str, variant: str, task: str):
        if value == "auto" and not _has_official_checkpoint(variant, task):
            if not config.allow_random_weights:
                raise ModelLoadError(f"{variant} has no official {task} checkpoint: set {what} to a checkpoint "
                                     f"file or URL, or allow random weights (model.allow_random_weights:=true, "
                                     "--allow-random-weights)")
            value = ""
        if value:
            return value
        if not config.allow_random_weights:
            raise ModelLoadError(f"{what} is empty: set it to a checkpoint path, URL or 'auto', or allow "
                                 "random weights (model.allow_random_weights:=true, --allow-random-weights)")
        warn(f"{what} is empty or {variant} has no official {task} checkpoint: running with RANDOM weights, "
             "outputs are meaningless")
        return None

    try:
        segmentation_variant = config.segmentation_variant or segmentation_variant_for(config.variant)
        if "segmentation" in config.tasks and segmentation_variant is None:
            raise ModelLoadError(
                f"{config.variant} has no segmentation model and no published one shares its backbone: "
                "set model.segmentation_variant to a segmentation variant (e.g. dpt_hybrid), or run "
                "model.tasks:=depth")
        if "depth" in config.tasks:
            depth_weights = weights_of(config.weights, "model.weights", config.variant, "depth")
            segmentation_weights = (weights_of(config.segmentation_weights, "model.segmentation_weights",
                                               segmentation_variant, "segmentation")
                                    if "segmentation" in config.tasks else None)
        else:  # segmentation only: model.weights names the segmentation checkpoint
            depth_weights = segmentation_weights = weights_of(config.weights, "model.weights",
                                                              segmentation_variant, "segmentation")
        return InferenceEngine.from_variant(
            config.variant, tasks=config.tasks, weights=depth_weights,
            segmentation_variant=segmentation_variant,
            segmentation_weights=segmentation_weights, device=config.device, precision=config.precision,
            input_size=config.input_size or None, compile_mode=config.compile, warn=warn)
    except ModelLoadError:
        raise
    except Exception as error:  # any failure to build/load is reported the same way
        raise ModelLoadError(f"cannot load model {config.variant!r} ({', '.join(config.tasks)}): "
                             f"{type(error).__name__}: {error}") from error


def _has_official_checkpoint(variant: str, task: str) -> bool:
    from dpt_ros.model import VARIANTS

    spec = VARIANTS.get(variant)
    return spec is None or task not in spec.tasks or spec.tasks[task].checkpoint_url is not None


def describe_compile(engine) -> str:
    """"eager", "cuda_graph", ... or "depth: ..., segmentation: ..." when the tasks differ (a fallback
    can hit one model only)."""
    statuses = engine.compile_status
    if len(set(statuses.values())) == 1:
        return next(iter(statuses.values()))
    return ", ".join(f"{task}: {status}" for task, status in statuses.items())
