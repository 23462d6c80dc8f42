"""What one evaluation run is asked to do, and the checks that refuse a run before any work.

An :class:`EvaluationConfig` holds the model as dpt_node describes it (``ModelConfig``) and the
output settings dpt_node applies (``PipelineSettings``), so a run computes what the node would
publish for the same frames.  :meth:`EvaluationConfig.resolved` validates it (with the node's own
parameter validation where the meaning is the same) and fills the values that depend on the model.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from dpt_ros import node_parameters
from dpt_ros.alignment_parameters import ALIGNMENT_PARAMETERS
from dpt_ros.depth import ALIGNMENT_NONE, ALIGNMENT_SCALE_SHIFT
from dpt_ros.model_config import ModelConfig
from dpt_ros.pipeline import PipelineSettings, metric_depth_available

# Depth ranges of the usual benchmarks (metres): KITTI (Eigen split) and NYU Depth v2 (DPT's metric
# models), Hypersim and Virtual KITTI 2 (Depth Anything V2's metric models: their max_depth).
PRESETS = {"kitti": (1e-3, 80.0), "nyu": (1e-3, 10.0), "hypersim": (1e-3, 20.0), "vkitti": (1e-3, 80.0)}
DEFAULT_DEPTH_RANGE = PRESETS["kitti"]
ALIGNMENT_AUTO = "auto"
ALIGNMENTS = (ALIGNMENT_AUTO, ALIGNMENT_NONE, ALIGNMENT_SCALE_SHIFT)

# Online alignment (--align-topic, --simulate-sparse): --align-<last part of the name> -> dpt_node's
# alignment.* parameter of that meaning.  alignment.source and alignment.registered follow from the
# topics given; TF (alignment.use_tf) is not recorded in a bag's sensor topics, so a static
# --align-extrinsic poses the sensor.
_ALIGNMENT_FROM_TOPICS = ("alignment.source", "alignment.registered", "alignment.use_tf")
ALIGNMENT_PARAMETER_OF_FLAG = {
    "--align-" + spec.name.rsplit(".", 1)[-1].replace("_", "-"): spec.name
    for spec in ALIGNMENT_PARAMETERS if spec.name not in _ALIGNMENT_FROM_TOPICS}
# What only a sensor topic has: simulated samples come from the ground truth at the image's pixels.
_SENSOR_ONLY_ALIGNMENT_PARAMETERS = ("alignment.extrinsic", "alignment.stamp_tolerance")

# evaluate_bag flag -> the dpt_node parameter with the same meaning, default and validation.
NODE_PARAMETER_OF_FLAG = {
    "--variant": "model.variant",
    "--weights": "model.weights",
    "--allow-random-weights": "model.allow_random_weights",
    "--segmentation-variant": "model.segmentation_variant",
    "--segmentation-weights": "model.segmentation_weights",
    "--device": "device",
    "--precision": "precision",
    "--compile": "compile",
    "--input-size": "input_size",
    "--depth-scale": "depth.scale",
    "--depth-shift": "depth.shift",
    "--depth-max-range": "depth.max_range",
    **ALIGNMENT_PARAMETER_OF_FLAG,
}
FLAG_OF_NODE_PARAMETER = {parameter: flag for flag, parameter in NODE_PARAMETER_OF_FLAG.items()}


class EvaluationError(Exception):
    """A configuration or input problem, reported to the user as one line."""


@dataclass(frozen=True)
class EvaluationConfig:
    """Settings of one run (report.json records them under "configuration").

    ``preset``/``min_depth``/``max_depth`` None and ``alignment`` "auto" are filled by
    :meth:`resolved` from the model: a metric variant is scored on its benchmark's range, and a
    model without metric depth (a relative variant and no ``pipeline.depth_scale``) is aligned to
    the ground truth by a least-squares scale and shift in inverse depth.
    """

    input_bag: Path
    image_topic: str
    model: ModelConfig = ModelConfig(variant=node_parameters.PARAMETERS_BY_NAME["model.variant"].default)
    pipeline: PipelineSettings = PipelineSettings()
    camera_info_topic: str | None = None
    gt_depth_topic: str | None = None
    gt_labels_topic: str | None = None
    gt_label_map: Path | None = None
    gt_label_offset: int = 0
    stamp_tolerance: float = 0.02
    batch_size: int = 1
    start: float = 0.0
    stride: int = 1
    max_frames: int | None = None
    preset: str | None = None
    min_depth: float | None = None
    max_depth: float | None = None
    alignment: str = ALIGNMENT_AUTO
    output_bag: Path | None = None
    output_prefix: str = "/dpt"
    copy_topics: tuple[str, ...] = field(default=())
    report_dir: Path | None = None
    progress: bool = False
    # Online alignment, as dpt_node's alignment.* would run it (dpt_ros.evaluation.online_alignment):
    # sparse metric depth from a topic of the bag (a depth image, registered to the camera or, with
    # align_camera_info_topic, reprojected; or a PointCloud2), or simulated from the ground truth
    # (simulate_sparse, a dpt_ros.evaluation.simulated_sparse specification).
    align_topic: str | None = None
    align_camera_info_topic: str | None = None
    simulate_sparse: str | None = None
    # dpt_node alignment.* parameter values by name (those of ALIGNMENT_PARAMETER_OF_FLAG); missing
    # ones take the node's defaults.  resolved() fills them all in.
    align_parameters: dict = field(default_factory=dict)

    @property
    def depth_output_kind(self) -> str | None:
        """What the depth model outputs ("metric_depth" / "relative_inverse_depth"), None without depth."""
        from dpt_ros.model import VARIANTS

        if "depth" not in self.model.tasks:
            return None
        return VARIANTS[self.model.variant].tasks["depth"].output_kind

    @property
    def online_alignment(self) -> bool:
        """Whether the run aligns the depth online (--align-topic or --simulate-sparse)."""
        return bool(self.align_topic or self.simulate_sparse)

    @property
    def metric_depth(self) -> bool:
        """Whether the run has depth in metres, as dpt_node would publish it on depth/image."""
        kind = self.depth_output_kind
        return kind is not None and metric_depth_available(kind, self.pipeline)

    def resolved(self) -> "EvaluationConfig":
        """This configuration checked, with its model-dependent defaults filled in.

        Raises EvaluationError naming the setting; nothing is read or written."""
        from dpt_ros.evaluation.metrics import load_label_map
        from dpt_ros.model import VARIANTS
        from dpt_ros.model_config import segmentation_variant_for

        for problem in _node_parameter_problems(self.model, self.pipeline):
            raise EvaluationError(problem)
        model = self.model
        tasks = tuple(dict.fromkeys(model.tasks))
        if not tasks or any(task not in ("depth", "segmentation") for task in tasks):
            raise EvaluationError(f"tasks must be depth and/or segmentation, got {', '.join(tasks) or 'none'}")
        spec = VARIANTS[model.variant]
        if "depth" in tasks and "depth" not in spec.tasks:
            raise EvaluationError(f"variant {model.variant} has no depth model (it has: {', '.join(spec.tasks)})")
        if "segmentation" in tasks:
            segmentation_variant = model.segmentation_variant or segmentation_variant_for(model.variant)
            if segmentation_variant is None or "segmentation" not in VARIANTS[segmentation_variant].tasks:
                raise EvaluationError(f"no segmentation model shares {model.variant}'s backbone: "
                                      "give one with --segmentation-variant (e.g. dpt_hybrid), or --tasks depth")
        if self.gt_labels_topic and "segmentation" not in tasks:
            raise EvaluationError("--gt-labels-topic needs the segmentation task (--tasks depth segmentation)")
        if self.gt_depth_topic and "depth" not in tasks:
            raise EvaluationError("--gt-depth-topic needs the depth task")
        resolved = dataclasses.replace(self, model=dataclasses.replace(model, tasks=tasks))

        preset = self.preset if self.preset is not None else _preset_of_variant(model.variant)
        if preset is not None and preset not in PRESETS:
            raise EvaluationError(f"unknown preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
        min_depth, max_depth = PRESETS.get(preset, DEFAULT_DEPTH_RANGE)
        min_depth = self.min_depth if self.min_depth is not None else min_depth
        max_depth = self.max_depth if self.max_depth is not None else max_depth
        if not (0 < min_depth < max_depth < math.inf):
            raise EvaluationError(f"need 0 < min-depth < max-depth < inf, got {min_depth}, {max_depth}")
        if self.batch_size < 1 or self.stride < 1:
            raise EvaluationError("--batch-size and --stride must be at least 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise EvaluationError("--max-frames must be at least 1")
        if self.start < 0 or self.stamp_tolerance < 0:
            raise EvaluationError("--start and --stamp-tolerance must not be negative")

        alignment = self.alignment
        if alignment not in ALIGNMENTS:
            raise EvaluationError(f"alignment must be one of {', '.join(ALIGNMENTS)}, got {alignment!r}")
        if alignment == ALIGNMENT_AUTO:
            alignment = ALIGNMENT_NONE if resolved.metric_depth or "depth" not in tasks else ALIGNMENT_SCALE_SHIFT
        if alignment == ALIGNMENT_NONE and self.gt_depth_topic and not resolved.metric_depth:
            raise EvaluationError(f"{model.variant} predicts relative inverse depth, which cannot be compared "
                                  "with metric ground truth without --alignment scale-shift or --depth-scale")
        if self.gt_label_map is not None:
            try:
                load_label_map(self.gt_label_map)
            except (OSError, ValueError) as exc:
                raise EvaluationError(f"cannot read --gt-label-map: {exc}") from None
        if self.copy_topics and self.output_bag is None:
            raise EvaluationError("--copy-topics needs --output-bag")
        prefix = "/" + self.output_prefix.strip("/") if self.output_prefix.strip("/") else ""
        align_parameters = _online_alignment_parameters(self, tasks)
        return dataclasses.replace(
            resolved, preset=preset, min_depth=float(min_depth), max_depth=float(max_depth), alignment=alignment,
            align_parameters=align_parameters, output_prefix=prefix, copy_topics=tuple(self.copy_topics),
            input_bag=Path(self.input_bag), output_bag=_path_or_none(self.output_bag),
            report_dir=_path_or_none(self.report_dir), gt_label_map=_path_or_none(self.gt_label_map))

    def check_output_locations(self) -> None:
        """Refuse output locations that cannot be written, before any work (EvaluationError)."""
        if self.output_bag is not None:
            if os.path.lexists(self.output_bag):
                raise EvaluationError(f"output bag {self.output_bag} exists already; not overwriting")
            problem = _unwritable(self.output_bag)
            if problem:
                raise EvaluationError(f"cannot write the output bag {self.output_bag}: {problem}")
        if self.report_dir is not None:
            problem = _unwritable(self.report_dir, may_exist=True)
            if problem:
                raise EvaluationError(f"cannot write the report to {self.report_dir}: {problem}")

    def to_json(self) -> dict:
        def plain(value):
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, tuple):
                return list(value)
            return value

        return plain(self)


def _node_parameter_problems(model: ModelConfig, pipeline: PipelineSettings):
    """dpt_node's validation of the parameters the run shares with it, messages naming our flags."""
    values = {
        "model.variant": model.variant, "model.segmentation_variant": model.segmentation_variant,
        "model.weights": model.weights, "model.segmentation_weights": model.segmentation_weights,
        "model.allow_random_weights": model.allow_random_weights, "device": model.device,
        "precision": model.precision, "compile": model.compile, "input_size": model.input_size,
        "depth.scale": pipeline.depth_scale, "depth.shift": pipeline.depth_shift,
        "depth.max_range": pipeline.depth_max_range, "cloud.stride": pipeline.cloud_stride,
        "cloud.max_range": pipeline.cloud_max_range, "colored.alpha": pipeline.colored_alpha,
    }
    for name, value in values.items():
        problem = node_parameters.validate(name, value)
        if problem:
            flag = FLAG_OF_NODE_PARAMETER.get(name)
            yield flag + problem[len(name):] if flag and problem.startswith(name) else problem
    tasks = set(model.tasks)
    values["model.tasks"] = "both" if tasks == {"depth", "segmentation"} else next(iter(tasks), "depth")
    problem = node_parameters.input_size_problem(values)
    if problem:
        yield FLAG_OF_NODE_PARAMETER.get("input_size", "input_size") + problem[len("input_size"):]


def _online_alignment_parameters(config: EvaluationConfig, tasks: tuple[str, ...]) -> dict:
    """Every alignment.* value of an online-alignment run (the node's defaults where none is given),
    checked as dpt_node checks them; {} for a run without online alignment.  EvaluationError names
    the flag."""
    from dpt_ros.evaluation.simulated_sparse import SparseSimulation

    given = dict(config.align_parameters)
    flags = [FLAG_OF_NODE_PARAMETER.get(name, name) for name in given]
    if config.align_topic and config.simulate_sparse:
        raise EvaluationError("--align-topic and --simulate-sparse are two sources of sparse depth: give one")
    if not config.online_alignment:
        flags += ["--align-camera-info-topic"] if config.align_camera_info_topic else []
        if flags:
            raise EvaluationError(f"{', '.join(flags)} configure online alignment: give --align-topic or "
                                  "--simulate-sparse too")
        return {}
    unknown = [name for name in given if name not in ALIGNMENT_PARAMETER_OF_FLAG.values()]
    if unknown:
        raise EvaluationError(f"unknown alignment parameters {', '.join(unknown)}; known: "
                              f"{', '.join(ALIGNMENT_PARAMETER_OF_FLAG.values())}")
    if "depth" not in tasks:
        raise EvaluationError("online alignment (--align-topic, --simulate-sparse) needs the depth task")
    if config.simulate_sparse:
        if not config.gt_depth_topic:
            raise EvaluationError("--simulate-sparse samples the ground-truth depth: it needs --gt-depth-topic")
        try:
            SparseSimulation.parse(config.simulate_sparse)
        except ValueError as error:
            raise EvaluationError(f"--simulate-sparse: {error}") from None
        # Compared with the defaults, not looked up: a resolved configuration holds every value.
        sensor_only = [FLAG_OF_NODE_PARAMETER[name] for name in _SENSOR_ONLY_ALIGNMENT_PARAMETERS
                       if name in given and _as_list(given[name]) != _as_list(_default(name))]
        sensor_only += ["--align-camera-info-topic"] if config.align_camera_info_topic else []
        if sensor_only:
            raise EvaluationError(f"{', '.join(sensor_only)} describe a sensor topic (--align-topic); "
                                  "--simulate-sparse samples the ground truth at the image's own pixels")
    values = {name: _default(name) for name in ALIGNMENT_PARAMETER_OF_FLAG.values()}
    values.update({name: _as_list(value) for name, value in given.items()})
    for name, value in values.items():
        problem = node_parameters.validate(name, value)
        if problem:
            raise EvaluationError(_in_flags(problem))
    problem = node_parameters.validate_together(values)
    if problem:
        raise EvaluationError(_in_flags(problem))
    return values


def _default(name: str):
    return node_parameters.PARAMETERS_BY_NAME[name].default


def _as_list(value):
    """A sequence value (the extrinsic, from the command line or Python) as the node's list type."""
    return list(value) if isinstance(value, (tuple, list)) else value


def _in_flags(message: str) -> str:
    """A dpt_node parameter problem with the alignment parameters named by our flags."""
    for flag, name in sorted(ALIGNMENT_PARAMETER_OF_FLAG.items(), key=lambda item: -len(item[1])):
        message = message.replace(name, flag)
    return message


def _preset_of_variant(variant: str) -> str | None:
    """Metric variants are evaluated on the range of the benchmark they were trained for, which
    their name says (dpt_hybrid_kitti, depth_anything_v2_metric_hypersim_vits, ...)."""
    words = variant.split("_")
    return next((name for name in PRESETS if name in words), None)


def _path_or_none(value) -> Path | None:
    return None if value is None else Path(value)


def _unwritable(path: Path, may_exist: bool = False) -> str | None:
    """Why a directory cannot be created (or written, if it exists) at ``path``; None if it can.

    Missing parents are fine (they are created); the nearest existing one must be a writable
    directory.  Nothing is created here."""
    path = Path(os.path.abspath(path))
    if may_exist and path.exists():
        if not path.is_dir():
            return "it is not a directory"
        return None if os.access(path, os.W_OK | os.X_OK) else "permission denied"
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{ancestor} is not writable"
    return None
