"""dpt_node's parameters: names, defaults, descriptions, ranges and validation (ROS-free).

One table drives the declarations in the node, the validation of run-time changes, the README's
parameter table and the tests that check config/dpt.yaml, so they cannot drift apart.
"""
from __future__ import annotations

import re

from dpt_ros.alignment_parameters import ALIGNMENT_PARAMETERS, alignment_problem
from dpt_ros.parameter_spec import ParameterSpec

TASK_CHOICES = ("depth", "segmentation", "both")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
PRECISIONS = ("fp32", "fp16", "bf16")
RELIABILITIES = ("best_effort", "reliable")
TRANSPORTS = ("raw", "compressed")
# dpt_ros.model_runner.COMPILE_MODES (not imported: this table stays free of torch).
COMPILE_MODES = ("eager", "torch_compile", "cuda_graph")


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("model.variant", "dpt_hybrid",
                  "DPT variant: dpt_large, dpt_hybrid, dpt_base, dpt_hybrid_kitti, dpt_hybrid_nyu (metric), "
                  "dpt_tiny (tests)", applies="reload"),
    ParameterSpec("model.weights", "auto",
                  "Depth (or only) model weights: a path, a URL, 'auto' = the variant's official checkpoint "
                  "downloaded once into $DPT_ROS_CACHE, or '' = random weights (needs model.allow_random_weights)",
                  applies="reload"),
    ParameterSpec("model.allow_random_weights", False,
                  "Allow '' weights (random initialisation; outputs are meaningless, for tests and demos)",
                  applies="reload"),
    ParameterSpec("model.tasks", "depth", "What to run: depth, segmentation or both", applies="reload",
                  choices=TASK_CHOICES),
    ParameterSpec("model.segmentation_variant", "",
                  "Variant of the segmentation model; '' = the same backbone as model.variant", applies="reload"),
    ParameterSpec("model.segmentation_weights", "auto",
                  "Segmentation model weights, same forms as model.weights", applies="reload"),
    ParameterSpec("device", "auto", "Device: auto (cuda if available), cpu, cuda or cuda:N", applies="reload"),
    ParameterSpec("precision", "fp32", "Inference precision: fp32, fp16 or bf16", applies="reload",
                  choices=PRECISIONS),
    ParameterSpec("compile", "eager",
                  "How the model runs: eager, torch_compile or cuda_graph (CUDA only), both specialised per "
                  "input size, the first frame of a size is slow; falls back to eager with a warning if unusable",
                  applies="reload", choices=COMPILE_MODES),
    ParameterSpec("input_size", 0,
                  "Network input size in pixels, aspect ratio kept (a multiple of 32 for DPT, of 14 for Depth "
                  "Anything V2, where it is the shorter side's lower bound); 0 = the variant's (384 DPT depth, "
                  "480 segmentation, 518 Depth Anything V2)", applies="reload", minimum=0, maximum=4096),
    ParameterSpec("max_rate_hz", 0.0, "Most frames processed per second; 0 = as fast as possible",
                  minimum=0.0, maximum=1000.0),
    ParameterSpec("image_transport", "raw",
                  "raw: subscribe to image (sensor_msgs/Image); compressed: image/compressed (jpeg/png)",
                  applies="restart", choices=TRANSPORTS),
    ParameterSpec("qos.input.reliability", "best_effort",
                  "Reliability of the image and camera_info subscriptions (best_effort = SensorData QoS)",
                  applies="restart", choices=RELIABILITIES),
    ParameterSpec("qos.input.depth", 5, "History depth of the input subscriptions", applies="restart",
                  minimum=1, maximum=1000),
    ParameterSpec("qos.output.reliability", "reliable", "Reliability of the output publishers",
                  applies="restart", choices=RELIABILITIES),
    ParameterSpec("qos.output.depth", 10, "History depth of the output publishers", applies="restart",
                  minimum=1, maximum=1000),
    ParameterSpec("camera_info.stamp_tolerance", 0.01,
                  "Largest stamp difference (s) for a camera_info to pair with an image", minimum=0.0,
                  maximum=10.0),
    ParameterSpec("camera_info.max_wait", 0.1,
                  "Longest wait (s) for the camera_info of an image's stamp; after it the latest camera_info "
                  "is used with a warning (none yet: no cloud, no depth/camera_info)", minimum=0.0, maximum=5.0),
    ParameterSpec("max_input_pixels", 4096 * 4096,
                  "Largest image accepted (width x height), checked on the message's size or the compressed "
                  "header before decoding; larger frames are rejected and counted", minimum=1, maximum=2**31 - 1),
    ParameterSpec("depth.scale", 0.0,
                  "Relative models: inverse metres = scale*output + shift; 0 = not set (no metric depth); "
                  "ignored while alignment.source is set",
                  minimum=0.0, maximum=1e6),
    ParameterSpec("depth.shift", 0.0, "Relative models: shift of the map above (inverse metres)",
                  minimum=-1e6, maximum=1e6),
    ParameterSpec("depth.max_range", 0.0, "Depth beyond this (m) is published as +inf (beyond range, REP 117); 0 = no limit",
                  minimum=0.0, maximum=1e6),
    ParameterSpec("cloud.enabled", True, "Publish the points cloud (needs metric depth and camera_info)"),
    ParameterSpec("cloud.stride", 1, "Keep every n-th row and column in the cloud", minimum=1, maximum=64),
    ParameterSpec("cloud.max_range", 0.0, "Points beyond this (m) are NaN; 0 = no limit", minimum=0.0,
                  maximum=1e6),
    ParameterSpec("colored.enabled", True, "Publish depth/colored and segmentation/colored"),
    ParameterSpec("colored.alpha", 0.5, "Opacity of the label colours over the image", minimum=0.0,
                  maximum=1.0),
    ParameterSpec("diagnostics.period", 1.0,
                  "Seconds between /diagnostics messages (and ~/stats messages when no frame was processed)",
                  applies="restart", minimum=0.1, maximum=60.0),
    ParameterSpec("diagnostics.window", 10.0,
                  "Seconds of recent frames that /diagnostics levels, rates and latency are computed over",
                  minimum=1.0, maximum=3600.0),
    ParameterSpec("managed", False,
                  "Lifecycle: false = configure and activate at start-up (a plain node); true = wait in "
                  "'unconfigured' for lifecycle transitions (configure loads the model, activate starts "
                  "processing), as Nav2 servers do", applies="restart"),
) + ALIGNMENT_PARAMETERS  # alignment.*: online alignment of relative depth to sparse metric depth

PARAMETERS_BY_NAME = {spec.name: spec for spec in PARAMETERS}
RELOAD_PARAMETERS = tuple(spec.name for spec in PARAMETERS if spec.applies == "reload")


def validate(name: str, value) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None when it is."""
    spec = PARAMETERS_BY_NAME.get(name)
    if spec is None:
        return None  # not ours (use_sim_time, ...)
    if isinstance(spec.default, float):
        # Typed on the command line as `-p max_rate_hz:=10`, a double arrives as an integer.
        if not _is_number(value):
            return f"{name} must be a number; got {value!r}"
    elif isinstance(spec.default, list):
        # A double array: rclpy hands over a list or an array.array('d'), or an integer array when
        # typed as `-p 'name:=[0, 0, 1]'`.
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or \
                not all(_is_number(item) for item in value):
            return f"{name} must be a list of numbers; got {value!r}"
        return alignment_problem(name, [float(item) for item in value])
    elif type(value) is not type(spec.default):
        return f"{name} must be a {type(spec.default).__name__}; got {value!r}"
    if spec.choices is not None and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}; got {value!r}"
    if spec.minimum is not None and value < spec.minimum:
        return f"{name} must be >= {spec.minimum}; got {value}"
    if spec.maximum is not None and value > spec.maximum:
        return f"{name} must be <= {spec.maximum}; got {value}"
    if name == "device" and not DEVICE_PATTERN.match(value):
        return f"device must be auto, cpu, cuda or cuda:N; got {value!r}"
    if name == "input_size" and value % 32 and value % 14:
        # Which of the two applies depends on the variant: validate_together checks that.
        return (f"input_size must be a multiple of 32 (DPT variants) or 14 (Depth Anything V2 variants), "
                f"or 0; got {value}")
    if name in ("model.variant", "model.segmentation_variant") and value:
        from dpt_ros.model import VARIANTS

        if value not in VARIANTS:
            return f"{name}: unknown variant {value!r}; expected one of {', '.join(sorted(VARIANTS))}"
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_together(values) -> str | None:
    """Why a set of parameter values (a mapping from name to value, all of them individually
    valid) cannot work together, or None.  Run-time changes are checked merged into the current
    values, so a change is refused when it would break a rule with a parameter it leaves alone."""
    problem = input_size_problem(values)
    if problem:
        return problem
    min_depth, max_depth = values.get("alignment.min_depth"), values.get("alignment.max_depth")
    if min_depth is not None and max_depth and max_depth <= min_depth:
        return (f"alignment.max_depth ({max_depth:g}) must be above alignment.min_depth ({min_depth:g}), "
                "or 0 for no limit")
    min_inliers, max_samples = values.get("alignment.fit.min_inliers"), values.get("alignment.max_samples")
    if min_inliers is not None and max_samples is not None and min_inliers > max_samples:
        return (f"alignment.fit.min_inliers ({min_inliers}) exceeds alignment.max_samples ({max_samples}): no fit "
                "could ever be accepted")
    return None


def input_size_problem(values) -> str | None:
    """Why ``input_size`` does not fit the models the values select, or None: each network takes
    sides that are multiples of its resize rule's (32 for DPT, 14 for Depth Anything V2's patches)."""
    size = values.get("input_size")
    variant = values.get("model.variant")
    if not size or not variant:
        return None
    from dpt_ros.model import VARIANTS
    from dpt_ros.model_config import segmentation_variant_for

    if variant not in VARIANTS:
        return None  # validate() names an unknown variant
    models = []
    tasks = tasks_of(values.get("model.tasks", "depth"))
    if "depth" in tasks and "depth" in VARIANTS[variant].tasks:
        models.append((variant, "depth"))
    if "segmentation" in tasks:
        segmentation_variant = values.get("model.segmentation_variant") or segmentation_variant_for(variant)
        if segmentation_variant in VARIANTS and "segmentation" in VARIANTS[segmentation_variant].tasks:
            models.append((segmentation_variant, "segmentation"))
    for name, task in models:
        multiple = VARIANTS[name].tasks[task].resize.multiple
        if size % multiple:
            return (f"input_size must be a multiple of {multiple} for {name}'s {task} model (or 0 for its own "
                    f"size); got {size}")
    return None


CAMERA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")


def validate_cameras(cameras: list[str]) -> str | None:
    """Why the `cameras` list is not usable as relative namespaces, or None when it is."""
    for camera in cameras:
        if not CAMERA_NAME.match(camera):
            return f"cameras: {camera!r} is not a relative namespace like 'front' or 'rig/left'"
    if len(set(cameras)) != len(cameras):
        return f"cameras: duplicate names in {cameras}"
    return None


def tasks_of(value: str) -> tuple[str, ...]:
    return ("depth", "segmentation") if value == "both" else (value,)


# ------------------------------------------------------------------------------------------------
# Model configuration <-> the parameters that make it
# ------------------------------------------------------------------------------------------------

def model_config_from(values) -> "ModelConfig":
    """The ModelConfig described by parameter values (a mapping from name to value)."""
    from dpt_ros.model_config import ModelConfig

    return ModelConfig(
        variant=values["model.variant"], weights=values["model.weights"],
        allow_random_weights=values["model.allow_random_weights"], tasks=tasks_of(values["model.tasks"]),
        segmentation_variant=values["model.segmentation_variant"],
        segmentation_weights=values["model.segmentation_weights"], device=values["device"],
        precision=values["precision"], compile=values["compile"], input_size=values["input_size"])


def parameter_values_of(config) -> dict:
    """The reload parameters' values that describe ``config`` (the inverse of model_config_from)."""
    tasks = "both" if len(config.tasks) == 2 else config.tasks[0]
    return {"model.variant": config.variant, "model.weights": config.weights,
            "model.allow_random_weights": config.allow_random_weights, "model.tasks": tasks,
            "model.segmentation_variant": config.segmentation_variant,
            "model.segmentation_weights": config.segmentation_weights, "device": config.device,
            "precision": config.precision, "compile": config.compile, "input_size": config.input_size}


# ------------------------------------------------------------------------------------------------
# Names that are not parameters
# ------------------------------------------------------------------------------------------------

def closest_name(name: str, known) -> str | None:
    """The known parameter name a misspelled ``name`` most likely meant, or None.

    Compares whole names and their last dotted part, so `varient` finds `model.variant` and
    `cloud.strid` finds `cloud.stride`."""
    import difflib

    best, best_score = None, 0.0
    for candidate in known:
        score = max(difflib.SequenceMatcher(None, name, candidate).ratio(),
                    difflib.SequenceMatcher(None, name.rsplit(".", 1)[-1], candidate.rsplit(".", 1)[-1]).ratio()
                    if "." in candidate else 0.0)
        if score > best_score:
            best, best_score = candidate, score
    return best if best_score >= 0.75 else None
