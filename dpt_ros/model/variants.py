"""The DPT variants: architecture, pre-processing and official checkpoint, in one table.

Every number that distinguishes one published DPT model from another lives here.  A variant
(:class:`VariantSpec`: backbone and decoder widths) has one network per task it was published for
(:class:`TaskSpec`: head, input size, normalization, output kind, checkpoint); the modules in this
package are built from a :class:`ModelSpec` (a variant and one task) and nothing else.  The official checkpoints are
the original release files of https://github.com/isl-org/DPT (release ``1_0``); the hexadecimal
suffix of each file name is the prefix of its sha256 digest.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

#: Where the original DPT release files are downloaded from.
RELEASE_URL = "https://github.com/isl-org/DPT/releases/download/1_0/"

#: The two tasks a variant may have a network for.
DEPTH = "depth"
SEGMENTATION = "segmentation"
TASKS = (DEPTH, SEGMENTATION)

#: Output kinds (``TaskSpec.output_kind``).
RELATIVE_INVERSE_DEPTH = "relative_inverse_depth"  # (B, H, W), unitless, larger = closer
METRIC_DEPTH = "metric_depth"  # (B, H, W), metres along the optical axis
LOGITS = "logits"  # (B, num_classes, H, W) segmentation logits
OUTPUT_KINDS = {DEPTH: (RELATIVE_INVERSE_DEPTH, METRIC_DEPTH), SEGMENTATION: (LOGITS,)}

VIT = "vit"
HYBRID = "hybrid"
READOUTS = ("ignore", "add", "project")

#: Number of ADE20K classes predicted by the segmentation models.
ADE20K_CLASSES = 150


@dataclass(frozen=True)
class BackboneSpec:
    """A timm Vision Transformer (optionally with a ResNetV2 stem) and the layers DPT taps.

    ``timm_name`` names a registered timm model (built with ``pretrained=False``); when it is
    None the same architecture is built from the explicit fields below through timm's
    ``VisionTransformer`` (and ``ResNetV2`` for hybrids), which is how small test models are made.
    The explicit fields must describe the named model too; ``Backbone`` checks they do.

    ``hooks`` are the four tapped layers.  For ``kind == "hybrid"`` the first two are ResNet stage
    indices whose feature maps are used directly (their channel counts must equal
    ``channels[0:2]``), the last two are transformer block indices.  For ``kind == "vit"`` all four
    are transformer block indices.  ``channels`` are the channel counts after reassembly.
    """

    kind: str
    embed_dim: int
    depth: int
    num_heads: int
    hooks: Tuple[int, int, int, int]
    channels: Tuple[int, int, int, int]
    timm_name: Optional[str] = None
    mlp_ratio: float = 4.0
    patch_size: int = 16
    #: Training resolution of the transformer: the position embedding holds
    #: (image_size // patch_size)**2 grid entries and is interpolated to other input sizes.
    image_size: int = 384
    # ResNetV2 stem of the hybrid (kind == "hybrid" only).  The tokens come from the last stage,
    # whose output stride must equal patch_size.
    resnet_layers: Tuple[int, ...] = ()
    resnet_channels: Tuple[int, ...] = ()
    resnet_stem_channels: int = 64
    resnet_groups: int = 32

    def __post_init__(self):
        if self.kind not in (VIT, HYBRID):
            raise ValueError(f"backbone kind must be {VIT!r} or {HYBRID!r}, not {self.kind!r}")
        if len(self.hooks) != 4 or len(self.channels) != 4:
            raise ValueError("a DPT backbone taps exactly four layers")
        blocks = self.hooks[2:] if self.kind == HYBRID else self.hooks
        if list(blocks) != sorted(set(blocks)) or blocks[0] < 0 or blocks[-1] >= self.depth:
            raise ValueError(f"transformer hooks {blocks} must increase within 0..{self.depth - 1}")
        if self.kind == HYBRID:
            if self.hooks[:2] != (0, 1):
                raise ValueError("a hybrid backbone taps ResNet stages 0 and 1")
            if len(self.resnet_layers) < 2 or tuple(self.resnet_channels[:2]) != tuple(self.channels[:2]):
                raise ValueError("hybrid channels[0:2] must be the ResNet stage 0 and 1 widths")
            if 4 * 2 ** (len(self.resnet_layers) - 1) != self.patch_size:
                raise ValueError("the ResNet stem's output stride must equal the patch size")
        if self.image_size % self.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")

    @property
    def grid_size(self) -> int:
        """Side of the token grid the position embedding was trained for."""
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class TaskSpec:
    """One task of a variant: its head, input convention, output kind and official weights."""

    task: str
    output_kind: str
    #: Network input size the model was trained/evaluated at: one side (square) or (height,
    #: width); the pre-processing resizes images to a multiple of 32 near it, keeping the aspect.
    input_size: Union[int, Tuple[int, int]]
    mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    #: segmentation: number of classes
    num_classes: Optional[int] = None
    #: metric depth: depth = 1 / (depth_scale * out + depth_shift) metres (dpt_ros.depth.relative_to_metric:
    #: +inf where that inverse depth is <= 1e-8, as the release clamps there)
    depth_scale: Optional[float] = None
    depth_shift: Optional[float] = None
    #: official release file (the hex suffix is the sha256 prefix); None: random weights only
    checkpoint_file: Optional[str] = None
    sha256_prefix: Optional[str] = None

    def __post_init__(self):
        if self.output_kind not in OUTPUT_KINDS.get(self.task, ()):
            raise ValueError(f"a {self.task!r} task outputs one of {OUTPUT_KINDS.get(self.task)}, "
                             f"not {self.output_kind!r}")
        if self.is_segmentation != (self.num_classes is not None):
            raise ValueError("num_classes is set exactly for segmentation")
        if self.is_metric != (self.depth_scale is not None and self.depth_shift is not None):
            raise ValueError("depth_scale and depth_shift are set exactly for metric depth")
        if any(side % 32 for side in self.height_width):
            raise ValueError(f"input_size sides must be multiples of 32, got {self.input_size}")
        if (self.checkpoint_file is None) != (self.sha256_prefix is None):
            raise ValueError("checkpoint file name and hash prefix go together")

    @property
    def height_width(self) -> Tuple[int, int]:
        """``input_size`` as (height, width)."""
        if isinstance(self.input_size, int):
            return (self.input_size, self.input_size)
        height, width = self.input_size
        return (height, width)

    @property
    def is_segmentation(self) -> bool:
        return self.task == SEGMENTATION

    @property
    def is_metric(self) -> bool:
        return self.output_kind == METRIC_DEPTH

    @property
    def checkpoint_url(self) -> Optional[str]:
        return None if self.checkpoint_file is None else RELEASE_URL + self.checkpoint_file


@dataclass(frozen=True)
class VariantSpec:
    """A DPT backbone + decoder and the task networks published for it (``tasks``)."""

    name: str
    backbone: BackboneSpec
    tasks: Dict[str, TaskSpec]
    features: int = 256
    readout: str = "project"
    description: str = ""

    def __post_init__(self):
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, not {self.readout!r}")
        if self.backbone.kind == HYBRID and self.readout != "project":
            raise ValueError("the hybrid backbone is only defined with the 'project' readout")
        for task, spec in self.tasks.items():
            if task != spec.task:
                raise ValueError(f"tasks[{task!r}] describes a {spec.task!r} network")

    def model(self, task: str = DEPTH) -> "ModelSpec":
        """The spec of this variant's network for ``task``."""
        if task not in self.tasks:
            raise ValueError(f"variant {self.name!r} has no {task} network (it has: {', '.join(self.tasks)})")
        return ModelSpec(self, self.tasks[task])


@dataclass(frozen=True)
class ModelSpec:
    """Everything one network is built from: a variant and one of its tasks."""

    variant: VariantSpec
    task: TaskSpec

    @property
    def name(self) -> str:
        return f"{self.variant.name}/{self.task.task}"

    @property
    def backbone(self) -> BackboneSpec:
        return self.variant.backbone

    @property
    def features(self) -> int:
        return self.variant.features

    @property
    def readout(self) -> str:
        return self.variant.readout

    @property
    def is_segmentation(self) -> bool:
        return self.task.is_segmentation

    @property
    def is_metric(self) -> bool:
        return self.task.is_metric

    def replace(self, backbone: Optional[dict] = None, task: Optional[dict] = None, **variant) -> "ModelSpec":
        """A copy with some backbone, task or variant fields changed."""
        if backbone:
            variant["backbone"] = dataclasses.replace(self.variant.backbone, **backbone)
        task_spec = dataclasses.replace(self.task, **(task or {}))
        variant["tasks"] = {task_spec.task: task_spec}
        return ModelSpec(dataclasses.replace(self.variant, **variant), task_spec)


VIT_LARGE = BackboneSpec(
    kind=VIT,
    timm_name="vit_large_patch16_384",
    embed_dim=1024,
    depth=24,
    num_heads=16,
    hooks=(5, 11, 17, 23),
    channels=(256, 512, 1024, 1024),
)

VIT_HYBRID = BackboneSpec(
    kind=HYBRID,
    timm_name="vit_base_r50_s16_384",
    embed_dim=768,
    depth=12,
    num_heads=12,
    hooks=(0, 1, 8, 11),
    channels=(256, 512, 768, 768),
    resnet_layers=(3, 4, 9),
    resnet_channels=(256, 512, 1024),
)

VIT_BASE = BackboneSpec(
    kind=VIT,
    timm_name="vit_base_patch16_384",
    embed_dim=768,
    depth=12,
    num_heads=12,
    hooks=(2, 5, 8, 11),
    channels=(96, 192, 384, 768),
)

#: A four-block ViT with DPT-Large's structure at a fraction of the width: fast tests and CI.
VIT_TINY = BackboneSpec(
    kind=VIT,
    embed_dim=64,
    depth=4,
    num_heads=4,
    mlp_ratio=2.0,
    hooks=(0, 1, 2, 3),
    channels=(16, 32, 64, 64),
    image_size=128,
)


def _relative_depth(input_size=384, filename=None):
    return TaskSpec(DEPTH, RELATIVE_INVERSE_DEPTH, input_size, **_checkpoint(filename))


def _metric_depth(input_size, scale, shift, filename):
    return TaskSpec(DEPTH, METRIC_DEPTH, input_size, depth_scale=scale, depth_shift=shift, **_checkpoint(filename))


def _ade20k(input_size=480, filename=None):
    return TaskSpec(SEGMENTATION, LOGITS, input_size, num_classes=ADE20K_CLASSES, **_checkpoint(filename))


def _checkpoint(filename):
    if filename is None:
        return {}
    return dict(checkpoint_file=filename, sha256_prefix=filename[: -len(".pt")].rsplit("-", 1)[1])


def _variants(*specs: VariantSpec):
    return {spec.name: spec for spec in specs}


#: Every known variant by name.  Official release files: relative depth trained on MIX-6
#: ("midas"), metric depth fine-tuned on KITTI and NYUv2, segmentation on ADE20K.
VARIANTS = _variants(
    VariantSpec(
        name="dpt_large",
        backbone=VIT_LARGE,
        tasks={
            DEPTH: _relative_depth(filename="dpt_large-midas-2f21e586.pt"),
            SEGMENTATION: _ade20k(filename="dpt_large-ade20k-b12dca68.pt"),
        },
        description="DPT-Large (ViT-L/16): relative inverse depth, ADE20K segmentation",
    ),
    VariantSpec(
        name="dpt_hybrid",
        backbone=VIT_HYBRID,
        tasks={
            DEPTH: _relative_depth(filename="dpt_hybrid-midas-501f0c75.pt"),
            SEGMENTATION: _ade20k(filename="dpt_hybrid-ade20k-53898607.pt"),
        },
        description="DPT-Hybrid (ResNet-50 + ViT-B/16): relative inverse depth, ADE20K segmentation",
    ),
    VariantSpec(
        name="dpt_hybrid_kitti",
        backbone=VIT_HYBRID,
        tasks={DEPTH: _metric_depth((352, 1216), 0.00006016, 0.00579, "dpt_hybrid_kitti-cb926ef4.pt")},
        description="DPT-Hybrid fine-tuned on KITTI: metric depth (outdoor driving)",
    ),
    VariantSpec(
        name="dpt_hybrid_nyu",
        backbone=VIT_HYBRID,
        tasks={DEPTH: _metric_depth((480, 640), 0.000305, 0.1378, "dpt_hybrid_nyu-2ce69ec7.pt")},
        description="DPT-Hybrid fine-tuned on NYUv2: metric depth (indoor)",
    ),
    VariantSpec(
        name="dpt_base",
        backbone=VIT_BASE,
        tasks={DEPTH: _relative_depth(), SEGMENTATION: _ade20k()},
        description="DPT-Base (ViT-B/16); no official weights were released",
    ),
    VariantSpec(
        name="dpt_tiny",
        backbone=VIT_TINY,
        tasks={DEPTH: _relative_depth(128), SEGMENTATION: _ade20k(128)},
        features=32,
        description="tiny random DPT for tests and CI (no weights)",
    ),
)


def get_variant(variant) -> VariantSpec:
    """The spec of a variant given by name (or a spec, returned as is)."""
    if isinstance(variant, VariantSpec):
        return variant
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown DPT variant {variant!r}; known: {', '.join(VARIANTS)}") from None


def get_model_spec(variant, task: str = DEPTH) -> ModelSpec:
    """The spec of one network: a variant (name or spec) and a task, or a ModelSpec as is."""
    if isinstance(variant, ModelSpec):
        return variant
    return get_variant(variant).model(task)
