"""The one place that knows how published DPT and Depth Anything V2 checkpoints name their tensors.

Three layouts exist; the names in ``original`` and ``hf`` depend on the model family (a DPT
variant or a Depth Anything V2 one, ``ModelSpec.is_depth_anything``):

``ours``
    ``DPT.state_dict()``: ``backbone.vit.*`` (timm's own names), ``reassemble.*``, ``fusion.*``,
    ``head.*`` and, for segmentation, ``aux_head.*``.
``original``
    The release files of https://github.com/isl-org/DPT: ``pretrained.model.*`` (timm),
    ``pretrained.act_postprocess{1-4}.*`` (readout ``.0.project.0``, 1x1 projection ``.3``,
    resampling ``.4``), ``scratch.layer{1-4}_rn``, ``scratch.refinenet{1-4}`` (``resConfUnit1/2``
    with ``conv1/2`` and ``bn1/2``, ``out_conv``), ``scratch.output_conv.{i}`` and ``auxlayer.{i}``.
    They also hold timm's unused ImageNet classifier ``pretrained.model.head.*``: it is ignored on
    import and written as zeros on export, so exported files have exactly the published key set.
``hf``
    The Hugging Face hub layout (``transformers.DPTForDepthEstimation`` /
    ``DPTForSemanticSegmentation``): ``dpt.embeddings.*``, ``dpt.encoder.layer.{n}.*`` with the
    attention's qkv split into ``query``/``key``/``value``, ``dpt.layernorm``, ``neck.*`` (fusion
    layers in reverse order) and ``head.head.{i}`` / ``auxiliary_head.head.{i}``; the hybrid's
    ResNet is transformers' BiT (``dpt.embeddings.backbone.bit.*``).
``original`` for Depth Anything V2
    The official ``.pth`` files (github.com/DepthAnything/Depth-Anything-V2, hosted under
    huggingface.co/depth-anything): ``pretrained.*`` (the DINOv2 reference's own names, which are
    timm's, plus ``mask_token``) and ``depth_head.*``: ``projects.{i}``, ``resize_layers.{i}``,
    ``scratch.layer{1-4}_rn``, ``scratch.refinenet{1-4}`` (``resConfUnit1/2``, ``out_conv``),
    ``scratch.output_conv1`` and ``scratch.output_conv2.{0,2}``.
``hf`` for Depth Anything V2
    ``transformers.DepthAnythingForDepthEstimation`` as the hub files store it (e.g.
    depth-anything/Depth-Anything-V2-Small-hf): ``backbone.embeddings.*`` (``cls_token``,
    ``mask_token``, ``position_embeddings``, ``patch_embeddings.projection``),
    ``backbone.encoder.layer.{n}.*`` (``norm1``, ``attention.attention.query/key/value``,
    ``attention.output.dense``, ``layer_scale1.lambda1``, ``norm2``, ``mlp.fc1/fc2``,
    ``layer_scale2.lambda1``), ``backbone.layernorm``, ``neck.*`` as for DPT and ``head.conv1-3``.
    transformers 5 renames the attention to ``attention.q_proj/k_proj/v_proj/o_proj`` when it
    loads such a file, so a state dict taken from a loaded model has those names: both are
    accepted on import (one naming per tensor); export writes the hub's.

Every conversion goes through ours: for each of our keys a rule gives its key(s) in the other
layout, so both directions use the same table.  Importing checks the source strictly: missing,
unexpected and mis-shaped tensors raise :class:`~dpt_ros.model.errors.WeightsLayoutError` naming
them in the source's own key names.  The only tolerated gap is a missing BatchNorm
``num_batches_tracked`` counter (unused at inference), which is filled with zero.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import torch

from .errors import WeightsLayoutError
from .variants import HYBRID, ModelSpec

OURS = "ours"
ORIGINAL = "original"
HF = "hf"
LAYOUTS = (OURS, ORIGINAL, HF)

#: timm's ImageNet classifier, present (unused) in the original DPT release files.
IMAGENET_CLASSES = 1000

_PREFIXES = {
    OURS: ("backbone.vit.", "reassemble.", "fusion."),
    ORIGINAL: ("pretrained.", "scratch.", "auxlayer.", "depth_head."),
    HF: ("dpt.", "neck.", "auxiliary_head.", "backbone.embeddings.", "backbone.encoder.", "backbone.layernorm."),
}

#: transformers 5's in-memory names of the hub's attention tensors (Dinov2 and others), as
#: (transformers 5 name, hub name) pieces of a key.
_HF_ATTENTION_ALIASES = (
    (".attention.q_proj.", ".attention.attention.query."),
    (".attention.k_proj.", ".attention.attention.key."),
    (".attention.v_proj.", ".attention.attention.value."),
    (".attention.o_proj.", ".attention.output.dense."),
)

_Rule = Tuple["re.Pattern[str]", Callable[["re.Match[str]"], Tuple[str, ...]]]


def _rule(pattern: str, target) -> _Rule:
    """Our keys matching ``pattern`` (at their start) get the prefix(es) made by ``target``: a
    ``re.Match.expand`` template, a tuple of them (a tensor stored as several, concatenated along
    dim 0), or a function of the match returning a prefix."""

    def expand(match):
        if callable(target):
            return (target(match),)
        if isinstance(target, tuple):
            return tuple(match.expand(item) for item in target)
        return (match.expand(target),)

    return re.compile(pattern), expand


def _stage(match) -> int:  # the original code counts stages and fusion blocks from 1
    return int(match.group(1)) + 1


_ORIGINAL_UNIT = {"skip_unit": "resConfUnit1", "refine_unit": "resConfUnit2"}


def _original_fusion_rules(prefix: str) -> List[_Rule]:
    """Fusion in the reference code's ``scratch`` module (DPT: ``scratch.``, Depth Anything V2:
    ``depth_head.scratch.``)."""
    return [
        _rule(r"fusion\.input_convs\.(\d)\.", lambda m: f"{prefix}layer{_stage(m)}_rn."),
        _rule(r"fusion\.blocks\.(\d)\.(skip_unit|refine_unit)\.(conv|norm)([12])\.",
              lambda m: f"{prefix}refinenet{_stage(m)}.{_ORIGINAL_UNIT[m.group(2)]}."
                        f"{'conv' if m.group(3) == 'conv' else 'bn'}{m.group(4)}."),
        _rule(r"fusion\.blocks\.(\d)\.projection\.", lambda m: f"{prefix}refinenet{_stage(m)}.out_conv."),
    ]


def _depth_anything_original_rules(spec: ModelSpec) -> List[_Rule]:
    head = "depth_head."
    return [
        _rule(r"backbone\.vit\.", "pretrained."),
        _rule(r"backbone\.mask_token$", "pretrained.mask_token"),
        _rule(r"reassemble\.stages\.(\d)\.projection\.", head + r"projects.\1."),
        _rule(r"reassemble\.stages\.(\d)\.resample\.", head + r"resize_layers.\1."),
        *_original_fusion_rules(head + "scratch."),
        _rule(r"head\.conv1\.", head + "scratch.output_conv1."),
        _rule(r"head\.conv2\.", head + "scratch.output_conv2.0."),
        _rule(r"head\.conv3\.", head + "scratch.output_conv2.2."),
    ]


def _original_rules(spec: ModelSpec) -> List[_Rule]:
    if spec.is_depth_anything:
        return _depth_anything_original_rules(spec)
    return [
        _rule(r"backbone\.vit\.", "pretrained.model."),
        _rule(r"reassemble\.stages\.(\d)\.readout\.linear\.",
              lambda m: f"pretrained.act_postprocess{_stage(m)}.0.project.0."),
        _rule(r"reassemble\.stages\.(\d)\.projection\.", lambda m: f"pretrained.act_postprocess{_stage(m)}.3."),
        _rule(r"reassemble\.stages\.(\d)\.resample\.", lambda m: f"pretrained.act_postprocess{_stage(m)}.4."),
        *_original_fusion_rules("scratch."),
        _rule(r"head\.conv1\.", "scratch.output_conv.0."),
        _rule(r"head\.conv2\.", "scratch.output_conv.2."),
        _rule(r"head\.conv3\.", "scratch.output_conv.4."),
        _rule(r"head\.conv\.", "scratch.output_conv.0."),
        _rule(r"head\.norm\.", "scratch.output_conv.1."),
        _rule(r"head\.classifier\.", "scratch.output_conv.4."),
        _rule(r"aux_head\.conv\.", "auxlayer.0."),
        _rule(r"aux_head\.norm\.", "auxlayer.1."),
        _rule(r"aux_head\.classifier\.", "auxlayer.4."),
    ]


_HF_UNIT = {"skip_unit": "residual_layer1", "refine_unit": "residual_layer2"}


def _hf_neck_rules(spec: ModelSpec) -> List[_Rule]:
    """transformers' neck, the same in DPT and Depth Anything: reassemble, convs, fusion."""
    # HF runs its fusion layers coarsest first: our block i is its layer (last - i).
    last = len(spec.backbone.channels) - 1
    return [
        _rule(r"reassemble\.stages\.(\d)\.readout\.linear\.", r"neck.reassemble_stage.readout_projects.\1.0."),
        _rule(r"reassemble\.stages\.(\d)\.projection\.", r"neck.reassemble_stage.layers.\1.projection."),
        _rule(r"reassemble\.stages\.(\d)\.resample\.", r"neck.reassemble_stage.layers.\1.resize."),
        _rule(r"fusion\.input_convs\.(\d)\.", r"neck.convs.\1."),
        _rule(r"fusion\.blocks\.(\d)\.(skip_unit|refine_unit)\.(conv|norm)([12])\.",
              lambda m: f"neck.fusion_stage.layers.{last - int(m.group(1))}.{_HF_UNIT[m.group(2)]}."
                        f"{'convolution' if m.group(3) == 'conv' else 'batch_norm'}{m.group(4)}."),
        _rule(r"fusion\.blocks\.(\d)\.projection\.",
              lambda m: f"neck.fusion_stage.layers.{last - int(m.group(1))}.projection."),
    ]


def _hf_attention_rules(block: str, layer: str) -> List[_Rule]:
    """timm's fused qkv and output projection -> the hub's query/key/value and attention.output.dense."""
    return [
        _rule(block + r"attn\.qkv\.",
              tuple(layer + f"attention.attention.{part}." for part in ("query", "key", "value"))),
        _rule(block + r"attn\.proj\.", layer + "attention.output.dense."),
    ]


def _depth_anything_hf_rules(spec: ModelSpec) -> List[_Rule]:
    block = r"backbone\.vit\.blocks\.(\d+)\."
    layer = r"backbone.encoder.layer.\1."
    return [
        _rule(r"backbone\.vit\.cls_token$", "backbone.embeddings.cls_token"),
        _rule(r"backbone\.mask_token$", "backbone.embeddings.mask_token"),
        _rule(r"backbone\.vit\.pos_embed$", "backbone.embeddings.position_embeddings"),
        _rule(r"backbone\.vit\.patch_embed\.proj\.", "backbone.embeddings.patch_embeddings.projection."),
        _rule(block + r"norm1\.", layer + "norm1."),
        *_hf_attention_rules(block, layer),
        _rule(block + r"ls1\.gamma$", layer + "layer_scale1.lambda1"),
        _rule(block + r"norm2\.", layer + "norm2."),
        _rule(block + r"mlp\.", layer + "mlp."),
        _rule(block + r"ls2\.gamma$", layer + "layer_scale2.lambda1"),
        _rule(r"backbone\.vit\.norm\.", "backbone.layernorm."),
        *_hf_neck_rules(spec),
        _rule(r"head\.", "head."),
    ]


def _hf_rules(spec: ModelSpec) -> List[_Rule]:
    if spec.is_depth_anything:
        return _depth_anything_hf_rules(spec)
    block = r"backbone\.vit\.blocks\.(\d+)\."
    layer = r"dpt.encoder.layer.\1."
    bit = "dpt.embeddings.backbone.bit."
    patch_projection = (
        "dpt.embeddings.projection." if spec.backbone.kind == HYBRID else "dpt.embeddings.patch_embeddings.projection."
    )
    return [
        _rule(r"backbone\.vit\.cls_token$", "dpt.embeddings.cls_token"),
        _rule(r"backbone\.vit\.pos_embed$", "dpt.embeddings.position_embeddings"),
        _rule(r"backbone\.vit\.patch_embed\.proj\.", patch_projection),
        _rule(r"backbone\.vit\.patch_embed\.backbone\.stem\.conv\.", bit + "embedder.convolution."),
        _rule(r"backbone\.vit\.patch_embed\.backbone\.stem\.norm\.", bit + "embedder.norm."),
        _rule(r"backbone\.vit\.patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.",
              bit + r"encoder.stages.\1.layers.\2."),
        _rule(block + r"norm1\.", layer + "layernorm_before."),
        *_hf_attention_rules(block, layer),
        _rule(block + r"norm2\.", layer + "layernorm_after."),
        _rule(block + r"mlp\.fc1\.", layer + "intermediate.dense."),
        _rule(block + r"mlp\.fc2\.", layer + "output.dense."),
        _rule(r"backbone\.vit\.norm\.", "dpt.layernorm."),
        *_hf_neck_rules(spec),
        _rule(r"head\.conv1\.", "head.head.0."),
        _rule(r"head\.conv2\.", "head.head.2."),
        _rule(r"head\.conv3\.", "head.head.4."),
        _rule(r"head\.conv\.", "head.head.0."),
        _rule(r"head\.norm\.", "head.head.1."),
        _rule(r"head\.classifier\.", "head.head.4."),
        _rule(r"aux_head\.conv\.", "auxiliary_head.head.0."),
        _rule(r"aux_head\.norm\.", "auxiliary_head.head.1."),
        _rule(r"aux_head\.classifier\.", "auxiliary_head.head.4."),
    ]


def _rules(spec: ModelSpec, layout: str) -> List[_Rule]:
    if layout == ORIGINAL:
        return _original_rules(spec)
    if layout == HF:
        return _hf_rules(spec)
    if layout == OURS:
        return [_rule(r"", "")]
    raise ValueError(f"unknown checkpoint layout {layout!r}; known: {', '.join(LAYOUTS)}")


def _extra_shapes(spec: ModelSpec, layout: str) -> Dict[str, Tuple[int, ...]]:
    """Tensors a layout holds that our model does not (exported as zeros, ignored on import)."""
    if layout != ORIGINAL or spec.is_depth_anything:
        return {}
    return {
        "pretrained.model.head.weight": (IMAGENET_CLASSES, spec.backbone.embed_dim),
        "pretrained.model.head.bias": (IMAGENET_CLASSES,),
    }


def key_table(our_keys: Sequence[str], spec: ModelSpec, layout: str) -> Dict[str, Tuple[str, ...]]:
    """For each of our keys, its key(s) in ``layout`` (several: concatenated along dim 0)."""
    rules = _rules(spec, layout)
    table = {}
    for key in our_keys:
        for pattern, target in rules:
            match = pattern.match(key)
            if match:
                rest = key[match.end():]
                table[key] = tuple(prefix + rest for prefix in target(match))
                break
        else:
            raise KeyError(f"no {layout} name for our key {key!r}")
    names = [name for names in table.values() for name in names]
    if len(set(names)) != len(names):
        raise AssertionError(f"the {layout} key table is not one-to-one")
    return table


def detect_layout(keys) -> str:
    """``ours``, ``original`` or ``hf`` from a state dict's keys; WeightsLayoutError otherwise."""
    keys = list(keys)
    found = [layout for layout, prefixes in _PREFIXES.items() if any(k.startswith(prefixes) for k in keys)]
    if len(found) == 1:
        return found[0]
    what = "mixes the " + " and ".join(found) + " layouts" if found else "is in no known DPT layout"
    raise WeightsLayoutError(
        f"the state dict ({len(keys)} tensors) {what}; expected one of: "
        + "; ".join(f"{layout} ({', '.join(p + '*' for p in prefixes)})" for layout, prefixes in _PREFIXES.items())
        + f". First keys: {_first(keys)}"
    )


def to_layout(state_dict: Mapping[str, torch.Tensor], spec: ModelSpec, layout: str) -> Dict[str, torch.Tensor]:
    """Our state dict in ``layout``'s names (tensors shared where possible, split ones copied)."""
    table = key_table(list(state_dict), spec, layout)
    out: Dict[str, torch.Tensor] = {}
    dtype = next((t.dtype for t in state_dict.values() if t.is_floating_point()), torch.float32)
    for key, names in table.items():
        tensor = state_dict[key].detach()
        if len(names) == 1:
            out[names[0]] = tensor
        else:
            for name, part in zip(names, tensor.chunk(len(names), dim=0)):
                out[name] = part.clone()
    for name, shape in _extra_shapes(spec, layout).items():
        out[name] = torch.zeros(shape, dtype=dtype)
    return out


def from_layout(
    state_dict: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    layout: str,
    reference: Mapping[str, torch.Tensor],
) -> Dict[str, torch.Tensor]:
    """A ``layout`` state dict in our names, checked against ``reference`` (our model's state
    dict: its keys and shapes).  Raises WeightsLayoutError on any missing, unexpected or
    mis-shaped tensor, naming them as the source names them."""
    table = key_table(list(reference), spec, layout)
    given = len(state_dict)
    # error messages name tensors as the source does: source_name(name in the layout's table)
    source_name = lambda name: name  # noqa: E731
    if layout == HF:
        state_dict, source_name = _with_hub_attention_names(state_dict, spec)
    ignored = set(_extra_shapes(spec, layout))
    used = set()
    out: Dict[str, torch.Tensor] = {}
    missing: List[str] = []
    mismatched: List[str] = []
    for key, names in table.items():
        absent = [name for name in names if name not in state_dict]
        if absent:
            if key.endswith("num_batches_tracked"):
                out[key] = torch.zeros_like(reference[key], device="cpu")
            else:
                missing.extend(source_name(name) for name in absent)
            continue
        used.update(names)
        parts = [state_dict[name] for name in names]
        tensor = parts[0] if len(parts) == 1 else _concat(parts)
        if tensor is None or tuple(tensor.shape) != tuple(reference[key].shape):
            shapes = ", ".join(str(tuple(p.shape)) for p in parts)
            mismatched.append(f"{'+'.join(source_name(name) for name in names)}: {shapes} "
                              f"(expected {tuple(reference[key].shape)})")
            continue
        out[key] = tensor
    unexpected = [source_name(key) for key in state_dict if key not in used and key not in ignored]
    if missing or unexpected or mismatched:
        problems = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                problems.append(f"{len(items)} {label}: {_first(items)}")
        raise WeightsLayoutError(
            f"the {layout}-layout state dict does not fit {spec.name} "
            f"({given} tensors given, {len(reference)} expected): " + "; ".join(problems)
        )
    return out


def _with_hub_attention_names(state_dict: Mapping[str, torch.Tensor], spec: ModelSpec):
    """An HF-layout state dict with transformers 5's attention names (``attention.q_proj`` ...)
    renamed to the hub files' (``attention.attention.query`` ...), and a function giving, for a
    hub name, the source's name for it (for error messages: a source in transformers 5's names
    hears about its missing tensors in those names).  A tensor given under both names is an error."""
    renamed: Dict[str, torch.Tensor] = {}
    original: Dict[str, str] = {}
    for key, tensor in state_dict.items():
        hub = _alias(key, 0, 1)
        if hub in renamed:
            raise WeightsLayoutError(
                f"the hf-layout state dict for {spec.name} holds the same tensor twice: "
                f"{original[hub]} and {key} (transformers 5 and hub names of {hub})")
        renamed[hub] = tensor
        original[hub] = key
    uses_transformers5_names = any(hub != key for hub, key in original.items())

    def source_name(name: str) -> str:
        if name in original:
            return original[name]
        return _alias(name, 1, 0) if uses_transformers5_names else name

    return renamed, source_name


def _alias(key: str, source: int, target: int) -> str:
    """``key`` with an attention name of one naming (0: transformers 5, 1: hub) put in the other."""
    for names in _HF_ATTENTION_ALIASES:
        if names[source] in key:
            return key.replace(names[source], names[target], 1)
    return key


def _concat(parts: List[torch.Tensor]):
    if any(p.dim() != parts[0].dim() or p.shape[1:] != parts[0].shape[1:] for p in parts):
        return None
    return torch.cat(parts, dim=0)


def _first(items, count: int = 5) -> str:
    items = list(items)
    shown = ", ".join(str(item) for item in items[:count])
    return shown + (f", ... (+{len(items) - count} more)" if len(items) > count else "")
