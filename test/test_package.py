"""The built package is a well-formed ROS 2 package: manifest, ament index, install layout."""
import ast
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXECUTABLES = ("dpt_node", "demo_camera", "evaluate_bag", "evaluate_bags")

# Python import name -> rosdep key that provides it (the keys package.xml must list).
ROSDEP_KEY_OF_MODULE = {
    "rclpy": "rclpy",
    "sensor_msgs": "sensor_msgs",
    "std_msgs": "std_msgs",
    "builtin_interfaces": "builtin_interfaces",
    "diagnostic_msgs": "diagnostic_msgs",
    "rcl_interfaces": "rcl_interfaces",
    "lifecycle_msgs": "lifecycle_msgs",
    "geometry_msgs": "geometry_msgs",
    "tf2_ros": "tf2_ros",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "launch_pytest": "launch_pytest",
    "ament_index_python": "ament_index_python",
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "torch": "python3-pytorch-pip",
    "torchvision": "python3-torchvision-pip",
    "timm": "python3-timm-pip",
    "safetensors": "python3-safetensors-pip",
    "rosbags": "python3-rosbags-pip",
    "ray": "python3-ray-pip",
    "matplotlib": "python3-matplotlib",
    "tqdm": "python3-tqdm",
    "yaml": "python3-yaml",
    "pytest": "python3-pytest",
    "transformers": "python3-transformers-pip",
    "catkin_pkg": "python3-catkin-pkg-modules",
}


def parse_manifest():
    from catkin_pkg.package import parse_package

    return parse_package(str(REPO / "package.xml"))


def imported_top_level_modules(paths):
    modules = set()
    local = {p.stem for path in paths for p in path.parent.glob("*.py")}  # scripts importing siblings
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - local - {"dpt_ros", "support", "__future__"}


def test_manifest_is_format_3_and_valid():
    package = parse_manifest()
    package.validate()
    assert package.package_format == 3
    assert package.name == "dpt_ros"
    assert package.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in [group.name for group in package.member_of_groups]


def test_manifest_lists_every_module_the_code_imports():
    package = parse_manifest()
    # <depend> expands into build, build_export and exec dependencies.
    runtime_keys = {dep.name for dep in package.exec_depends}
    test_keys = {dep.name for dep in package.test_depends} | runtime_keys

    code = [p for p in (REPO / "dpt_ros").rglob("*.py")] + [REPO / "bin" / name for name in EXECUTABLES]
    code += [REPO / "launch" / "dpt.launch.py"] if (REPO / "launch" / "dpt.launch.py").exists() else []
    tests = list((REPO / "test").rglob("*.py")) + list((REPO / "benchmarks").rglob("*.py"))

    for paths, keys, kind in ((code, runtime_keys, "exec_depend"), (tests, test_keys, "test_depend")):
        for module in sorted(imported_top_level_modules(paths)):
            assert module in ROSDEP_KEY_OF_MODULE, f"{module} is imported but has no rosdep key in this test's table"
            assert ROSDEP_KEY_OF_MODULE[module] in keys, f"package.xml lacks <{kind}>{ROSDEP_KEY_OF_MODULE[module]}"


def test_ros_free_core_never_imports_rclpy():
    # The ROS adapter is the dpt_ros/ros subpackage, plus the demo tools.
    adapter = REPO / "dpt_ros" / "ros"
    adapter_modules = {"demo_camera.py", "demo_run.py"}
    core = [p for p in (REPO / "dpt_ros").rglob("*.py") if p.name not in adapter_modules and adapter not in p.parents]
    assert len(core) > 20  # the walk found the core
    for path in core:
        modules = imported_top_level_modules([path])
        assert not modules & {"rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "builtin_interfaces"}, path


@pytest.mark.ros
def test_share_files_and_executables_are_found_through_the_ament_index():
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    share = Path(get_package_share_directory("dpt_ros"))
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "dpt.launch.py").is_file()
    assert (share / "config" / "dpt.yaml").is_file()
    prefix = Path(get_package_prefix("dpt_ros"))
    for name in EXECUTABLES:
        executable = prefix / "lib" / "dpt_ros" / name
        assert executable.is_file() and os.access(executable, os.X_OK), executable
    # The install space is where colcon put it, at the repository root.
    assert prefix == REPO / "install" / "dpt_ros"
