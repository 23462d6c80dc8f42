"""Python metadata and entry points of dpt_ros, usable outside colcon.

colcon builds this package with ament_cmake (see package.xml and CMakeLists.txt), because the
interfaces in msg/ must be generated; CMakeLists.txt installs the same modules and executables.
`pip install .` gives the ROS-free core (model, engine, geometry, metrics, bag evaluator) and the
console scripts; the node additionally needs a ROS 2 environment with dpt_ros' messages built.
"""
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "dpt_ros"
ROOT = Path(__file__).parent

setup(
    name=PACKAGE,
    version="0.1.0",
    description="DPT depth and semantic segmentation for ROS 2: depth images, labels and point clouds",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", [str(p.relative_to(ROOT)) for p in (ROOT / "launch").glob("*.py")]),
        (f"share/{PACKAGE}/config", [str(p.relative_to(ROOT)) for p in sorted((ROOT / "config").glob("*"))]),
    ],
    install_requires=["numpy", "torch", "torchvision", "timm", "safetensors", "opencv-python-headless",
                      "PyYAML", "tqdm", "matplotlib", "rosbags", "ray"],
    extras_require={"test": ["pytest", "pytest-timeout", "transformers"]},
    entry_points={
        "console_scripts": [
            "dpt_node = dpt_ros.ros.node:main",
            "demo_camera = dpt_ros.demo_camera:main",
            "evaluate_bag = dpt_ros.evaluation.cli:main",
            "evaluate_bags = dpt_ros.evaluation.fleet_cli:main",
        ],
    },
)
