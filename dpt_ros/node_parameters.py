"""dpt_node's parameters: names, defaults, descriptions, ranges and validation (ROS-free).

One table drives the declarations in the node, the validation of run-time changes, the README's
parameter table and the tests that check config/dpt.yaml, so they cannot drift apart.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

TASK_CHOICES = ("depth", "segmentation", "both")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
PRECISIONS = ("fp32", "fp16", "bf16")
RELIABILITIES = ("best_effort", "reliable")
TRANSPORTS = ("raw", "compressed")
# dpt_ros.model_runner.COMPILE_MODES (not imported: this table stays free of torch).
COMPILE_MODES = ("eager", "torch_compile", "cuda_graph")


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: object
    description: str
    # "restart": read-only, needs a restart; "reload": reloads the model; "live": next frame.
    applies: str = "live"
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None


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
                  "Network input size in pixels (multiple of 32, aspect ratio kept); 0 = the variant's "
                  "(384 depth, 480 segmentation)", applies="reload", minimum=0, maximum=4096),
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
                  "Largest stamp difference (s) for a camera_info to match an image; otherwise the latest "
                  "camera_info is used with a warning", minimum=0.0, maximum=10.0),
    ParameterSpec("depth.scale", 0.0,
                  "Relative models: inverse metres = scale*output + shift; 0 = not set (no metric depth)",
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
    ParameterSpec("diagnostics.period", 1.0, "Seconds between /diagnostics messages", applies="restart",
                  minimum=0.1, maximum=60.0),
)

PARAMETERS_BY_NAME = {spec.name: spec for spec in PARAMETERS}
RELOAD_PARAMETERS = tuple(spec.name for spec in PARAMETERS if spec.applies == "reload")


def validate(name: str, value) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None when it is."""
    spec = PARAMETERS_BY_NAME.get(name)
    if spec is None:
        return None  # not ours (use_sim_time, ...)
    if isinstance(spec.default, float):
        # Typed on the command line as `-p max_rate_hz:=10`, a double arrives as an integer.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number; got {value!r}"
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
    if name == "input_size" and value % 32:
        return f"input_size must be a multiple of 32 (or 0); got {value}"
    if name in ("model.variant", "model.segmentation_variant") and value:
        from dpt_ros.model import VARIANTS

        if value not in VARIANTS:
            return f"{name}: unknown variant {value!r}; expected one of {', '.join(sorted(VARIANTS))}"
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
