"""How each model family sizes an image for its network and its depth back to the image (ROS-free).

The published models were trained and evaluated with their reference code's resize, and give their
best answers when run the same way, so the rule is part of a variant (``TaskSpec.resize``), not a
choice of the engine:

``minimal`` (DPT, github.com/isl-org/DPT)
    Keep the aspect ratio and scale as little as possible: of the two factors that would bring the
    height or the width to the network size, the one closer to 1; then round each side to the
    nearest multiple of 32.  Depth comes back bicubically (align_corners=False).
``lower_bound`` (Depth Anything V2, ``DepthAnythingV2.image2tensor`` / ``infer_image``)
    Keep the aspect ratio and scale so that both sides reach at least the network size (the larger
    of the two factors); round each side to the nearest multiple of 14, and up instead when that
    would fall below the network size.  Depth comes back bilinearly with align_corners=True.

Both round half to even, as ``numpy.round`` in the reference code does (Python's ``round`` does the
same), and compute each side as ``(target / side) * side`` in that order, so the floating-point
result is the reference's to the last bit.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

MINIMAL = "minimal"
LOWER_BOUND = "lower_bound"

NetworkSize = Union[int, Tuple[int, int]]


@dataclass(frozen=True)
class ResizeRule:
    """A reference code's image -> network resize and network -> image depth resize."""

    #: MINIMAL or LOWER_BOUND (see the module docstring)
    method: str
    #: network sides are multiples of this (the backbone's patch size, times two for DPT's decoder)
    multiple: int
    #: how the depth prediction is resized back to the image: torch interpolation mode and corners
    depth_mode: str
    depth_align_corners: bool

    def __post_init__(self):
        if self.method not in (MINIMAL, LOWER_BOUND):
            raise ValueError(f"resize method must be {MINIMAL!r} or {LOWER_BOUND!r}, not {self.method!r}")
        if self.multiple < 1:
            raise ValueError(f"the network multiple must be positive, got {self.multiple}")
        if self.depth_mode not in ("bilinear", "bicubic"):
            raise ValueError(f"depth resize mode must be 'bilinear' or 'bicubic', not {self.depth_mode!r}")


#: DPT's reference rule (multiples of 32: patch 16, then one more halving in the decoder).
DPT_RESIZE = ResizeRule(MINIMAL, 32, depth_mode="bicubic", depth_align_corners=False)
#: Depth Anything V2's reference rule (multiples of the DINOv2 patch, 14).
DEPTH_ANYTHING_RESIZE = ResizeRule(LOWER_BOUND, 14, depth_mode="bilinear", depth_align_corners=True)


def as_height_width(size: NetworkSize | Sequence[int], minimum: int = DPT_RESIZE.multiple) -> tuple[int, int]:
    """A network size given as one side or as (height, width) -> (height, width), each side at
    least ``minimum`` (the rule's multiple)."""
    if isinstance(size, numbers.Integral):
        pair = (int(size), int(size))
    else:
        pair = tuple(int(side) for side in size)
        if len(pair) != 2:
            raise ValueError(f"network size must be an int or (height, width), got {size!r}")
    if min(pair) < minimum:
        raise ValueError(f"network size sides must be at least {minimum}, got {size!r}")
    return pair


def network_size(height: int, width: int, input_size: NetworkSize, rule: ResizeRule = DPT_RESIZE) -> tuple[int, int]:
    """Network input (height, width) for an ``height`` x ``width`` image by ``rule``.

    ``input_size`` is the network size the model was trained at: one side length (square: 384 for
    DPT depth, 480 for DPT segmentation, 518 for Depth Anything V2) or (height, width) (e.g. DPT's
    KITTI 352 x 1216).  No side is ever below ``rule.multiple``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    target_height, target_width = as_height_width(input_size, rule.multiple)
    scale_height = target_height / height
    scale_width = target_width / width
    multiple = rule.multiple
    if rule.method == MINIMAL:
        scale = scale_width if abs(1 - scale_width) < abs(1 - scale_height) else scale_height

        def to_multiple(length: float, target: int) -> int:
            return max(multiple, round(length / multiple) * multiple)
    else:
        scale = scale_width if scale_width > scale_height else scale_height

        def to_multiple(length: float, target: int) -> int:
            side = round(length / multiple) * multiple
            return math.ceil(length / multiple) * multiple if side < target else side

    return to_multiple(scale * height, target_height), to_multiple(scale * width, target_width)
