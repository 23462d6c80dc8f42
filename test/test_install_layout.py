"""The launch file and parameter files, checked without the launch packages.

launch / launch_ros cannot be installed in this environment, so this module reads the launch file
as source (ast), runs its argument logic against minimal stand-ins that accept only the keyword
arguments the real classes take, and checks the YAML files both with PyYAML and with rcl's own
parameter parser (through rclpy), the one a node started with --params-file uses.
"""
import ast
import os
import runpy
import sys
import types
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / "launch" / "dpt.launch.py"
CONFIG = REPO / "config"
WILDCARD = "/**"

# Every dpt_node parameter and its default, as config/dpt.yaml must declare them. The type of each
# value is the parameter's ROS type (a double written as 0 would become an integer; a list of
# doubles is a double array).
DEFAULTS = {
    "model.variant": "dpt_hybrid",
    "model.weights": "auto",
    "model.allow_random_weights": False,
    "model.tasks": "depth",
    "model.segmentation_variant": "",
    "model.segmentation_weights": "auto",
    "device": "auto",
    "precision": "fp32",
    "compile": "eager",
    "input_size": 0,
    "max_rate_hz": 0.0,
    "image_transport": "raw",
    "qos.input.reliability": "best_effort",
    "qos.input.depth": 5,
    "qos.output.reliability": "reliable",
    "qos.output.depth": 10,
    "camera_info.stamp_tolerance": 0.01,
    "camera_info.max_wait": 0.1,
    "max_input_pixels": 16777216,
    "depth.scale": 0.0,
    "depth.shift": 0.0,
    "depth.max_range": 0.0,
    "cloud.enabled": True,
    "cloud.stride": 1,
    "cloud.max_range": 0.0,
    "colored.enabled": True,
    "colored.alpha": 0.5,
    "diagnostics.period": 1.0,
    "diagnostics.window": 10.0,
    "managed": False,
    "alignment.source": "none",
    "alignment.mode": "full",
    "alignment.registered": True,
    "alignment.extrinsic": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    "alignment.use_tf": False,
    "alignment.stamp_tolerance": 0.05,
    "alignment.timeout": 1.0,
    "alignment.min_depth": 0.1,
    "alignment.max_depth": 0.0,
    "alignment.max_samples": 4096,
    "alignment.fit.inlier_threshold": 0.15,
    "alignment.fit.min_inliers": 30,
    "alignment.fit.min_inlier_fraction": 0.3,
    "alignment.fit.max_residual": 0.08,
    "alignment.fit.iterations": 64,
    "alignment.filter.smoothing": 0.3,
    "alignment.filter.gate": 0.2,
    "alignment.filter.gate_frames": 3,
}
CHOICES = {
    "model.variant": {"dpt_large", "dpt_hybrid", "dpt_base", "dpt_hybrid_kitti", "dpt_hybrid_nyu", "dpt_tiny"},
    "model.tasks": {"depth", "segmentation", "both"},
    "precision": {"fp32", "fp16", "bf16"},
    "compile": {"eager", "torch_compile", "cuda_graph"},
    "image_transport": {"raw", "compressed"},
    "qos.input.reliability": {"best_effort", "reliable"},
    "qos.output.reliability": {"best_effort", "reliable"},
    "alignment.source": {"none", "depth_image", "points"},
    "alignment.mode": {"full", "scale_only"},
}
# The example files: what each must set (beyond that, only known parameter names may appear).
EXAMPLES = {
    "metric_outdoor.yaml": {"model.variant": "dpt_hybrid_kitti", "device": "cuda", "precision": "bf16",
                            "cloud.stride": 2, "depth.max_range": 80.0},
    "indoor.yaml": {"model.variant": "dpt_hybrid_nyu", "model.tasks": "both",
                    "model.segmentation_variant": "dpt_hybrid", "depth.max_range": 10.0},
    "multi_camera.yaml": {"cameras": ["front", "left", "right", "rear"]},
    "lidar_aligned.yaml": {"model.variant": "dpt_hybrid", "alignment.source": "points",
                           "alignment.extrinsic": [0.0, -0.08, -0.12, 0.5, -0.5, 0.5, 0.5]},
    "rgbd_aligned.yaml": {"model.variant": "dpt_hybrid", "alignment.source": "depth_image",
                          "alignment.registered": True, "alignment.max_depth": 4.0},
}
EXTRA_NAMES = {"multi_camera.yaml": {"cameras"}}


def flatten(tree, prefix=""):
    """Nested YAML mappings -> {dotted.name: value}, as rcl reads a parameter file."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def load_parameters(path):
    document = yaml.safe_load(path.read_text())
    assert list(document) == [WILDCARD], f"{path.name}: the only top-level key must be {WILDCARD!r}"
    assert list(document[WILDCARD]) == ["ros__parameters"], path.name
    return flatten(document[WILDCARD]["ros__parameters"])


def assert_same_type(name, value, expected):
    # bool is an int in Python; ROS keeps them apart, and so does this check.
    assert type(value) is type(expected), f"{name}: {value!r} is {type(value).__name__}, want {type(expected).__name__}"


# ----------------------------------------------------------------------------------------------
# Parameter files
# ----------------------------------------------------------------------------------------------

def test_default_yaml_declares_exactly_the_node_parameters_with_their_defaults():
    parameters = load_parameters(CONFIG / "dpt.yaml")
    assert set(parameters) == set(DEFAULTS), (
        f"missing {sorted(set(DEFAULTS) - set(parameters))}, unexpected {sorted(set(parameters) - set(DEFAULTS))}")
    for name, expected in DEFAULTS.items():
        assert_same_type(name, parameters[name], expected)
        assert parameters[name] == expected, name
    for name, allowed in CHOICES.items():
        assert parameters[name] in allowed, name


def yaml_comments(path):
    """Dotted parameter name -> the comment block right above its line."""
    comments, block, stack = {}, [], []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("# "))
            continue
        if not stripped:
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        key, _, value = stripped.partition(":")
        del stack[depth:]
        if value.strip():
            comments[".".join(stack[2:] + [key])] = " ".join(block)  # below "/**" and ros__parameters
        else:
            stack.append(key)
        block = []
    return comments


def test_default_yaml_documents_when_each_parameter_takes_effect_as_the_node_does():
    """Every parameter has a comment ending its block with [restart], [reload] or [live], the
    same as dpt_node's own parameter table says; and that table's defaults are this file's."""
    from dpt_ros.node_parameters import PARAMETERS

    comments = yaml_comments(CONFIG / "dpt.yaml")
    assert set(comments) == set(DEFAULTS)
    node_table = {spec.name: spec for spec in PARAMETERS}
    assert set(node_table) == set(DEFAULTS)
    for name, comment in comments.items():
        tags = [tag for tag in ("[restart]", "[reload]", "[live]") if tag in comment]
        assert len(tags) == 1, f"{name}: comment must carry exactly one of [restart] [reload] [live]: {comment!r}"
        assert tags[0] == f"[{node_table[name].applies}]", f"{name}: the node says {node_table[name].applies}"
        assert_same_type(name, node_table[name].default, DEFAULTS[name])
        assert node_table[name].default == DEFAULTS[name], name


@pytest.mark.parametrize("file_name", sorted(EXAMPLES))
def test_example_files_set_what_they_promise_with_known_names(file_name):
    parameters = load_parameters(CONFIG / file_name)
    for name, expected in EXAMPLES[file_name].items():
        assert parameters.get(name) == expected, name
    known = set(DEFAULTS) | EXTRA_NAMES.get(file_name, set())
    assert set(parameters) <= known, f"unknown parameters {sorted(set(parameters) - known)}"
    for name, value in parameters.items():
        if name in DEFAULTS:
            assert_same_type(name, value, DEFAULTS[name])
        if name in CHOICES:
            assert value in CHOICES[name], name


def test_multi_camera_example_is_read_by_the_node_as_a_string_array():
    # dpt_node declares `cameras` as STRING_ARRAY; the example must give it a list of namespaces.
    from dpt_ros.node_parameters import validate_cameras

    cameras = load_parameters(CONFIG / "multi_camera.yaml")["cameras"]
    assert isinstance(cameras, list) and cameras and validate_cameras(cameras) is None


@pytest.mark.ros
@pytest.mark.parametrize("file_name", ["dpt.yaml"] + sorted(EXAMPLES))
def test_rcl_parses_each_file_for_a_renamed_node_in_a_namespace(file_name):
    """rcl's parser (what --params-file uses) accepts the file, the wildcard reaches a node of
    another name in a namespace, and every value arrives with the expected ROS type."""
    import rclpy
    from rclpy.parameter import Parameter

    path = CONFIG / file_name
    expected = {**DEFAULTS, **EXAMPLES.get(file_name, {})} if file_name != "dpt.yaml" else DEFAULTS
    in_file = load_parameters(path)
    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(path)], context=context)
    try:
        node = rclpy.create_node("renamed_dpt", namespace="front", context=context,
                                 automatically_declare_parameters_from_overrides=True)
        try:
            for name, value in in_file.items():
                parameter = node.get_parameter(name)
                # `cameras` (a string array) has no default in DEFAULTS: its own value tells its type.
                assert parameter.type_ == Parameter.Type.from_parameter_value(expected.get(name, value)), name
                value_read = list(parameter.value) if isinstance(value, list) else parameter.value
                assert value_read == value, name
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


# ----------------------------------------------------------------------------------------------
# Launch file, read as source
# ----------------------------------------------------------------------------------------------

def launch_tree():
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def module_constants(tree):
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return constants


def launched_nodes(tree):
    """(package, executable) of every call with literal (or module-constant) package= and executable=."""
    constants = module_constants(tree)

    def literal(expression):
        if isinstance(expression, ast.Constant):
            return expression.value
        if isinstance(expression, ast.Name):
            return constants.get(expression.id)
        return None

    nodes = set()
    for call in ast.walk(tree):
        if isinstance(call, ast.Call):
            keywords = {k.arg: literal(k.value) for k in call.keywords if k.arg in ("package", "executable")}
            if keywords.get("executable"):
                nodes.add((keywords.get("package"), keywords["executable"]))
    return nodes


def test_launch_file_is_python_with_the_launch_entry_point():
    tree = launch_tree()
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    assert launched_nodes(tree) == {("dpt_ros", "dpt_node"), ("dpt_ros", "demo_camera")}


@pytest.mark.ros
def test_launch_file_default_params_and_executables_exist_in_the_install_space():
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    tree = launch_tree()
    share = Path(get_package_share_directory("dpt_ros"))
    for constant in ("DEFAULT_PARAMS_FILE", "DEFAULT_FASTDDS_PROFILE"):
        default_file = share.joinpath(*module_constants(tree)[constant])
        assert default_file.is_file(), default_file
    for package, executable in launched_nodes(tree):
        path = Path(get_package_prefix(package)) / "lib" / package / executable
        assert path.is_file() and os.access(path, os.X_OK), path
    # The install space holds the current sources (scripts/setup.sh was run after the last edit).
    assert (share / "launch" / LAUNCH_FILE.name).read_text() == LAUNCH_FILE.read_text()
    for source in CONFIG.glob("*"):
        assert (share / "config" / source.name).read_text() == source.read_text(), source.name


# ----------------------------------------------------------------------------------------------
# Launch file logic against stand-ins of the launch API
# ----------------------------------------------------------------------------------------------

class _Recorder:
    """Base of the stand-ins: keeps the keyword arguments, rejects any the real class lacks."""

    ACCEPTED: tuple = ()

    def __init__(self, *args, **kwargs):
        unknown = set(kwargs) - set(self.ACCEPTED)
        assert not unknown, f"{type(self).__name__} takes no {sorted(unknown)}"
        self.args, self.kwargs = args, kwargs


class _Node(_Recorder):
    # launch_ros.actions.Node's own keywords plus the ExecuteProcess ones the launch file may use.
    ACCEPTED = ("executable", "package", "name", "namespace", "exec_name", "parameters", "remappings",
                "ros_arguments", "arguments", "output", "emulate_tty", "respawn", "respawn_delay",
                "additional_env", "condition", "sigterm_timeout", "sigkill_timeout", "on_exit")


class _DeclareLaunchArgument(_Recorder):
    ACCEPTED = ("default_value", "description", "choices", "condition")


class _OpaqueFunction(_Recorder):
    ACCEPTED = ("function", "args", "kwargs", "condition")


class _Shutdown(_Recorder):
    ACCEPTED = ("reason", "condition")


class _LaunchConfiguration:
    def __init__(self, variable_name, *, default=None):
        self.name = variable_name

    def perform(self, context):
        return context.launch_configurations[self.name]


@pytest.fixture
def launch_module(monkeypatch, tmp_path):
    """The launch file executed with stand-ins for launch / launch_ros and a fake share directory."""
    def module(name, **attributes):
        stand_in = types.ModuleType(name)
        stand_in.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, stand_in)
        return stand_in

    module("launch", LaunchDescription=lambda entities: list(entities))
    module("launch.actions", DeclareLaunchArgument=_DeclareLaunchArgument, OpaqueFunction=_OpaqueFunction,
           Shutdown=_Shutdown)
    module("launch.substitutions", LaunchConfiguration=_LaunchConfiguration)
    module("launch_ros")
    module("launch_ros.actions", Node=_Node)
    module("ament_index_python")
    module("ament_index_python.packages", get_package_share_directory=lambda package: str(tmp_path / package))
    return runpy.run_path(str(LAUNCH_FILE))


@pytest.fixture
def params_file(tmp_path):
    """The default params file where the fake share directory says it is (the launch file checks it)."""
    path = tmp_path / "dpt_ros" / "config" / "dpt.yaml"
    path.parent.mkdir(parents=True)
    path.write_text((CONFIG / "dpt.yaml").read_text())
    return str(path)


def run_launch(launch_module, **given):
    """Declared arguments' defaults updated with ``given`` -> the Node stand-ins the file creates
    (several demo cameras are keyed demo_camera:<namespace>)."""
    entities = launch_module["generate_launch_description"]()
    declared = {e.args[0]: e.kwargs["default_value"] for e in entities if isinstance(e, _DeclareLaunchArgument)}
    assert not set(given) - set(declared), "test passes an argument the launch file does not declare"
    context = types.SimpleNamespace(launch_configurations={**declared, **given})
    opaque = [e for e in entities if isinstance(e, _OpaqueFunction)]
    assert len(opaque) == 1
    nodes = {}
    for node in opaque[0].kwargs["function"](context):
        key = node.kwargs["executable"]
        if key in nodes or (key == "demo_camera" and given.get("cameras")):
            key = f"{key}:{node.kwargs['namespace']}"
        nodes[key] = node.kwargs
    return declared, nodes


def test_launch_declares_the_documented_arguments_and_defaults(launch_module, tmp_path):
    declared, _ = run_launch(launch_module, params_file=str(CONFIG / "dpt.yaml"))
    share = tmp_path / "dpt_ros"
    assert declared == {
        "params_file": str(share / "config" / "dpt.yaml"),
        "namespace": "", "image": "image", "camera_info": "camera_info", "cameras": "", "variant": "",
        "device": "", "allow_random_weights": "false", "lifecycle": "false", "log_level": "info",
        "use_sim_time": "false", "demo": "false", "fastdds_profile": str(share / "config" / "fastdds_large_shm.xml"),
    }


def test_launch_defaults_start_only_dpt_node_with_the_params_file(launch_module, params_file, tmp_path):
    _, nodes = run_launch(launch_module)
    assert set(nodes) == {"dpt_node"}
    node = nodes["dpt_node"]
    assert (node["package"], node["name"], node["output"], node["emulate_tty"]) == ("dpt_ros", "dpt_node", "screen", True)
    assert node["namespace"] is None  # no namespace of its own: an enclosing PushRosNamespace applies
    # No override dictionary at all when nothing is given.
    assert node["parameters"] == [params_file, {"use_sim_time": False}]
    assert dict(node["remappings"]) == {"image": "image", "camera_info": "camera_info",
                                        "image/compressed": "image/compressed"}
    assert node["arguments"] == ["--ros-args", "--log-level", "info"]
    assert node["additional_env"] == {
        "FASTDDS_DEFAULT_PROFILES_FILE": str(tmp_path / "dpt_ros" / "config" / "fastdds_large_shm.xml")}
    # The whole launch ends with dpt_node.
    assert isinstance(node["on_exit"], _Shutdown)


def test_launch_passes_only_the_overrides_that_were_given(launch_module, params_file):
    _, nodes = run_launch(launch_module, variant="dpt_tiny", params_file=str(CONFIG / "indoor.yaml"))
    assert nodes["dpt_node"]["parameters"] == [str(CONFIG / "indoor.yaml"), {"model.variant": "dpt_tiny"},
                                               {"use_sim_time": False}]
    _, nodes = run_launch(launch_module, device="cuda:1", variant="dpt_large", use_sim_time="True",
                          allow_random_weights="true", lifecycle="true", log_level="DEBUG", fastdds_profile="")
    node = nodes["dpt_node"]
    assert node["parameters"][1:] == [{"model.variant": "dpt_large", "device": "cuda:1",
                                       "model.allow_random_weights": True, "managed": True},
                                      {"use_sim_time": True}]
    assert node["arguments"] == ["--ros-args", "--log-level", "debug"] and node["additional_env"] == {}


def test_launch_demo_publishes_on_the_topics_dpt_node_reads_in_its_namespace(launch_module, params_file):
    _, nodes = run_launch(launch_module, demo="true", namespace="front", image="/cam/image_raw",
                          camera_info="/cam/info")
    assert set(nodes) == {"dpt_node", "demo_camera"}
    expected = {"image": "/cam/image_raw", "camera_info": "/cam/info", "image/compressed": "/cam/image_raw/compressed"}
    for node in nodes.values():
        assert node["namespace"] == "front"
        assert dict(node["remappings"]) == expected
    assert nodes["demo_camera"]["parameters"] == [{"use_sim_time": False}]
    assert "on_exit" not in nodes["demo_camera"]


@pytest.mark.parametrize("cameras", ["[front, left]", "front,left", "front left", "['front', 'left']"])
def test_launch_cameras_go_to_one_node_and_the_demo_gets_one_camera_each(launch_module, params_file, cameras):
    _, nodes = run_launch(launch_module, demo="true", cameras=cameras, namespace="rig")
    assert nodes["dpt_node"]["parameters"][1] == {"cameras": ["front", "left"]}
    assert nodes["dpt_node"]["namespace"] == "rig"
    # Each demo camera publishes image/camera_info in <namespace>/<camera>: what dpt_node reads.
    assert {key: node["namespace"] for key, node in nodes.items() if key.startswith("demo_camera")} == {
        "demo_camera:rig/front": "rig/front", "demo_camera:rig/left": "rig/left"}
    assert all(node["remappings"] == [] for key, node in nodes.items() if key.startswith("demo_camera"))


def test_launch_refuses_a_params_file_that_does_not_exist(launch_module):
    with pytest.raises(FileNotFoundError, match="/nonexistent/params.yaml"):
        run_launch(launch_module, params_file="/nonexistent/params.yaml")


@pytest.mark.parametrize("argument, value", [("demo", "maybe"), ("lifecycle", "perhaps"), ("log_level", "loud")])
def test_launch_rejects_a_value_it_cannot_use(launch_module, params_file, argument, value):
    with pytest.raises(ValueError, match=argument):
        run_launch(launch_module, **{argument: value})


def test_every_readme_launch_example_has_a_launch_test():
    """test/test_launch.py runs each `ros2 launch` example of the README (where launch is installed)."""
    from support.launch_examples import EXAMPLES, launch_arguments, readme_examples

    assert set(readme_examples()) == set(EXAMPLES)  # an example may appear in several sections
    assert launch_arguments(next(e for e in EXAMPLES if e.startswith("cameras"))) == {
        "cameras": "[front, left]", "demo": "true", "variant": "dpt_tiny", "allow_random_weights": "true"}
