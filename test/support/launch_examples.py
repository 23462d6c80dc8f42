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
}


def readme_examples() -> list[str]:
    """The arguments of every `ros2 launch dpt_ros dpt.launch.py ...` line in the README's code."""
    examples = []
    for line in README.read_text().splitlines():
        line = line.strip()
        if line.startswith(COMMAND):
            examples.append(line[len(COMMAND):].split("  #")[0].strip())
    return examples


def launch_arguments(example: str) -> dict[str, str]:
    """`name:=value` pairs of an example as the shell passes them to ros2 launch."""
    return dict(word.split(":=", 1) for word in shlex.split(example) if ":=" in word)
