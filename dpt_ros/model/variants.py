"""The DPT variants: architecture, pre-processing and official checkpoint, in one table.

Every number that distinguishes one published model from another lives here.  A variant
(:class:`VariantSpec`: backbone and decoder widths) has one network per task it was published for
(:class:`TaskSpec`: head, input size, resize rule, normalization, output kind, checkpoint, licence);
the modules in this package are built from a :class:`ModelSpec` (a variant and one task) and nothing
else.  Two families share the DPT decoder:

* DPT (Ranftl et al. 2021): the original release files of https://github.com/isl-org/DPT (release
  ``1_0``, MIT licence); the hexadecimal suffix of each file name is the prefix of its sha256.
* Depth Anything V2 (Yang et al. 2024; github.com/DepthAnything/Depth-Anything-V2): a DPT head on a
  DINOv2 ViT, relative inverse depth or metric depth (Hypersim indoor up to 20 m, Virtual KITTI 2
  outdoor up to 80 m), from the official ``.pth`` files on the Hugging Face hub
  (``depth-anything/*``).  Small checkpoints are Apache-2.0, Base and Large CC-BY-NC-4.0
  (non-commercial); the repository README and metric_depth/README say so.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

from ..resize_rules import DEPTH_ANYTHING_RESIZE, DPT_RESIZE, ResizeRule

#: Where the original DPT release files are downloaded from.
RELEASE_URL = "https://github.com/isl-org/DPT/releases/download/1_0/"
#: The Hugging Face hub repository of an official Depth Anything V2 file ("{repo}" is filled in).
DEPTH_ANYTHING_HUB_URL = "https://huggingface.co/depth-anything/{repo}/resolve/main/"

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
#: A DINOv2 ViT (Depth Anything V2): patch 14, layer scale, a mask token, the final norm applied to
#: every tapped block, and the position embedding resized as the DINOv2 reference code does it.
DINOV2 = "dinov2"
BACKBONE_KINDS = (VIT, HYBRID, DINOV2)
READOUTS = ("ignore", "add", "project")

#: Licences of the official checkpoints (SPDX identifiers).
MIT = "MIT"
APACHE_2 = "Apache-2.0"
CC_BY_NC_4 = "CC-BY-NC-4.0"

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
    ``channels[0:2]``), the last two are transformer block indices.  For ``kind == "vit"`` and
    ``"dinov2"`` all four are transformer block indices.  ``channels`` are the channel counts after
    reassembly.
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
        if self.kind not in BACKBONE_KINDS:
            raise ValueError(f"backbone kind must be one of {BACKBONE_KINDS}, not {self.kind!r}")
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
    #: width); ``resize`` sizes images for the network from it, keeping the aspect.
    input_size: Union[int, Tuple[int, int]]
    mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    #: the reference code's resize rule (DPT: "minimal" to multiples of 32; Depth Anything V2:
    #: "lower_bound" to multiples of 14), see dpt_ros.resize_rules
    resize: ResizeRule = DPT_RESIZE
    #: segmentation: number of classes
    num_classes: Optional[int] = None
    #: metric DPT: depth = 1 / (depth_scale * out + depth_shift) metres (dpt_ros.depth.relative_to_metric:
    #: +inf where that inverse depth is <= 1e-8, as the release clamps there)
    depth_scale: Optional[float] = None
    depth_shift: Optional[float] = None
    #: metric Depth Anything V2: depth = max_depth * sigmoid(out), metres
    max_depth: Optional[float] = None
    #: official checkpoint file, downloaded from ``checkpoint_base_url``; None: random weights only
    checkpoint_file: Optional[str] = None
    checkpoint_base_url: str = RELEASE_URL
    #: prefix of the file's sha256 where one is published (DPT: in the file name), else None and
    #: the download is not verified
    sha256_prefix: Optional[str] = None
    #: SPDX licence of the official checkpoint (users must know before they deploy)
    licence: Optional[str] = None

    def __post_init__(self):
        if self.output_kind not in OUTPUT_KINDS.get(self.task, ()):
            raise ValueError(f"a {self.task!r} task outputs one of {OUTPUT_KINDS.get(self.task)}, "
                             f"not {self.output_kind!r}")
        if self.is_segmentation != (self.num_classes is not None):
            raise ValueError("num_classes is set exactly for segmentation")
        inverse_depth_affine = self.depth_scale is not None and self.depth_shift is not None
        if (self.depth_scale is None) != (self.depth_shift is None):
            raise ValueError("depth_scale and depth_shift go together")
        if self.is_metric != (inverse_depth_affine or self.max_depth is not None):
            raise ValueError("metric depth has either depth_scale and depth_shift or max_depth, others neither")
        if inverse_depth_affine and self.max_depth is not None:
            raise ValueError("metric depth has either depth_scale and depth_shift or max_depth, not both")
        if self.max_depth is not None and not self.max_depth > 0:
            raise ValueError(f"max_depth must be positive, got {self.max_depth}")
        if any(side % self.resize.multiple for side in self.height_width):
            raise ValueError(f"input_size sides must be multiples of {self.resize.multiple}, got {self.input_size}")
        if self.sha256_prefix is not None and self.checkpoint_file is None:
            raise ValueError("a hash prefix needs a checkpoint file")
        if self.checkpoint_file is not None and self.licence is None:
            raise ValueError("an official checkpoint needs its licence")

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
        return None if self.checkpoint_file is None else self.checkpoint_base_url + self.checkpoint_file


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
        if self.backbone.kind == DINOV2 and self.readout != "ignore":
            raise ValueError("Depth Anything V2 does not use the class token: its readout is 'ignore'")
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

    @property
    def is_depth_anything(self) -> bool:
        """A Depth Anything V2 network (DINOv2 backbone): its own checkpoint layouts and decoder details."""
        return self.variant.backbone.kind == DINOV2

    @property
    def input_multiple(self) -> int:
        """The network's input sides must be multiples of this."""
        return self.task.resize.multiple

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


def _dinov2(timm_name, embed_dim, depth, num_heads, hooks, channels) -> BackboneSpec:
    """A DINOv2 ViT as Depth Anything V2 builds it: patch 14, trained at 518 x 518 (37 x 37 grid)."""
    return BackboneSpec(kind=DINOV2, timm_name=timm_name, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                        hooks=hooks, channels=channels, patch_size=14, image_size=518)


# Depth Anything V2's encoders and the widths of its head's projections (its model_configs).
DINOV2_SMALL = _dinov2("vit_small_patch14_dinov2", 384, 12, 6, (2, 5, 8, 11), (48, 96, 192, 384))
DINOV2_BASE = _dinov2("vit_base_patch14_dinov2", 768, 12, 12, (2, 5, 8, 11), (96, 192, 384, 768))
DINOV2_LARGE = _dinov2("vit_large_patch14_dinov2", 1024, 24, 16, (4, 11, 17, 23), (256, 512, 1024, 1024))

#: VIT_TINY's widths as a DINOv2 ViT (Depth Anything V2's structure), trained grid 5 x 5 (70
#: pixels): fast tests and CI.
DINOV2_TINY = dataclasses.replace(VIT_TINY, kind=DINOV2, patch_size=14, image_size=70)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _relative_depth(input_size=384, filename=None):
    return TaskSpec(DEPTH, RELATIVE_INVERSE_DEPTH, input_size, **_checkpoint(filename))


def _metric_depth(input_size, scale, shift, filename):
    return TaskSpec(DEPTH, METRIC_DEPTH, input_size, depth_scale=scale, depth_shift=shift, **_checkpoint(filename))


def _ade20k(input_size=480, filename=None):
    return TaskSpec(SEGMENTATION, LOGITS, input_size, num_classes=ADE20K_CLASSES, **_checkpoint(filename))


def _checkpoint(filename):
    if filename is None:
        return {}
    return dict(checkpoint_file=filename, sha256_prefix=filename[: -len(".pt")].rsplit("-", 1)[1], licence=MIT)


def _depth_anything(output_kind=RELATIVE_INVERSE_DEPTH, max_depth=None, hub_repo=None, filename=None,
                    sha256=None, licence=None, input_size=518):
    """A Depth Anything V2 depth network as its reference ``infer_image`` runs it (ImageNet mean and
    std, lower-bound resize to multiples of 14 at ``input_size``)."""
    checkpoint = {}
    if filename is not None:
        checkpoint = dict(checkpoint_file=filename, checkpoint_base_url=DEPTH_ANYTHING_HUB_URL.format(repo=hub_repo),
                          sha256_prefix=sha256, licence=licence)
    return TaskSpec(DEPTH, output_kind, input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    resize=DEPTH_ANYTHING_RESIZE, max_depth=max_depth, **checkpoint)


#: sha256 of the official Depth Anything V2 files where one could be learned: the hub shows each
#: LFS file's digest on its page, which this offline project could not read; the Small relative
#: file's digest (99 218 434 bytes) is quoted identically by many independent projects that pin it.
#: The others are not known here: their downloads are not verified (None).
DEPTH_ANYTHING_SHA256 = {
    "depth_anything_v2_vits.pth": "715fade13be8f229f8a70cc02066f656f2423a59effd0579197bbf57860e1378",
}

#: Encoder sizes: (our suffix, hub repository size name, backbone, head features, licence).
_DEPTH_ANYTHING_SIZES = (
    ("vits", "Small", DINOV2_SMALL, 64, APACHE_2),
    ("vitb", "Base", DINOV2_BASE, 128, CC_BY_NC_4),
    ("vitl", "Large", DINOV2_LARGE, 256, CC_BY_NC_4),
)
#: Metric fine-tunings: (our infix, hub repository infix, max depth in metres, what).
_DEPTH_ANYTHING_METRIC = (
    ("hypersim", "Hypersim", 20.0, "indoor (Hypersim), up to 20 m"),
    ("vkitti", "VKITTI", 80.0, "outdoor (Virtual KITTI 2), up to 80 m"),
)


def _depth_anything_variants():
    for suffix, size_name, backbone, features, licence in _DEPTH_ANYTHING_SIZES:
        name = f"depth_anything_v2_{suffix}"
        yield VariantSpec(
            name=name,
            backbone=backbone,
            tasks={DEPTH: _depth_anything(hub_repo=f"Depth-Anything-V2-{size_name}", filename=f"{name}.pth",
                                          sha256=DEPTH_ANYTHING_SHA256.get(f"{name}.pth"), licence=licence)},
            features=features,
            readout="ignore",
            description=f"Depth Anything V2 {size_name} (DINOv2 ViT-{suffix[-1].upper()}/14): relative inverse "
                        f"depth; weights {licence}",
        )
        for infix, hub_infix, max_depth, what in _DEPTH_ANYTHING_METRIC:
            name = f"depth_anything_v2_metric_{infix}_{suffix}"
            yield VariantSpec(
                name=name,
                backbone=backbone,
                tasks={DEPTH: _depth_anything(METRIC_DEPTH, max_depth,
                                              f"Depth-Anything-V2-Metric-{hub_infix}-{size_name}", f"{name}.pth",
                                              DEPTH_ANYTHING_SHA256.get(f"{name}.pth"), licence)},
                features=features,
                readout="ignore",
                description=f"Depth Anything V2 {size_name} fine-tuned for metric depth {what}; weights {licence}",
            )


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
    *_depth_anything_variants(),
    VariantSpec(
        name="depth_anything_v2_tiny",
        backbone=DINOV2_TINY,
        tasks={DEPTH: _depth_anything(input_size=70)},
        features=32,
        readout="ignore",
        description="tiny random Depth Anything V2 for tests and CI (no weights)",
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
