"""The README's `ros2 launch` examples and what each must do when test/test_launch.py runs it.

test_install_layout.py checks (everywhere) that this table lists exactly the README's examples;
test_launch.py runs each under launch_pytest where the ROS 2 launch packages are installed.
"""
from __future__ import annotations

import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
COMMAND = "ros2 launch dpt_ros dpt.launch.py"

# Example arguments (as written in the README) -> the behaviour test_launch.py checks.
EXAMPLES = {
    # A real camera's topics: the test publishes frames there (offline, with the tiny random model).
    "image:=/camera/color/image_raw camera_info:=/camera/color/camera_info": "camera",
    "demo:=true variant:=dpt_tiny allow_random_weights:=true": "demo",
    # Needs the KITTI checkpoint and a GPU: here the node must fail with one error line and end the launch.
    "namespace:=front variant:=dpt_hybrid_kitti device:=cuda": "fails_without_weights_or_gpu",
    "cameras:='[front, left]' demo:=true variant:=dpt_tiny allow_random_weights:=true": "cameras",
    "lifecycle:=true demo:=true variant:=dpt_tiny allow_random_weights:=true": "lifecycle",
    "--show-args": "show_args",
    # Metric depth, way 2: the README's my_scale.yaml (written by the test) on a real camera's topics.
    "params_file:=my_scale.yaml image:=/camera/image_raw camera_info:=/camera/camera_info": "fixed_scale",
    # Metric depth, way 3: the installed lidar example in a namespace.
    "namespace:=front params_file:=$(ros2 pkg prefix dpt_ros)/share/dpt_ros/config/lidar_aligned.yaml": "lidar_aligned",
}


def readme_examples() -> list[str]:
    """The arguments of every `ros2 launch dpt_ros dpt.launch.py ...` line in the README's code."""
    examples = []
    for line in README.read_text().splitlines():
        line = line.strip()
        if line.startswith(COMMAND):
            examples.append(line[len(COMMAND):].split("  #")[0].strip())
    return examples


def launch_arguments(example: str, package_prefix: str = "") -> dict[str, str]:
    """`name:=value` pairs of an example as the shell passes them to ros2 launch (with
    `$(ros2 pkg prefix dpt_ros)` replaced by ``package_prefix``)."""
    example = example.replace("$(ros2 pkg prefix dpt_ros)", package_prefix)
    return dict(word.split(":=", 1) for word in shlex.split(example) if ":=" in word)


def readme_yaml_block(file_name: str) -> str:
    """The README's YAML block that starts with the comment `# <file_name>`."""
    text = README.read_text()
    start = text.index(f"```yaml\n# {file_name}\n") + len("```yaml\n")
    return text[start:text.index("```", start)]
