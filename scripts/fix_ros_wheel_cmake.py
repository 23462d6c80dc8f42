#!/usr/bin/env python3
"""Make the ROS 2 wheels' CMake files usable on this machine (idempotent).

The ros-jazzy-* wheels are built on a manylinux image whose Python lives under /opt/python; the
CMake export files they install name that machine's Python and numpy include directories, so any
package that links a generated message library (every msg/ package) fails to configure with
"includes non-existent path". This rewrites those paths to this interpreter's directories.

It also makes rosidl_generator_py add the Python and numpy include directories to the generated
library as build-only requirements: exporting them is what carried the build machine's paths into
the wheels in the first place, and when the virtualenv lives inside the source tree CMake refuses
to export a path under the source directory.

Usage: fix_ros_wheel_cmake.py PREFIX   (PREFIX = the virtualenv holding the wheels)
"""
import re
import sys
import sysconfig
from pathlib import Path

import numpy

BUILD_PYTHON_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
BUILD_NUMPY_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/_core/include")
GENERATOR_PY_INCLUDES = (
    "target_include_directories(${_target_name_lib} PUBLIC ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})"
)
GENERATOR_PY_INCLUDES_FIXED = (
    "target_include_directories(${_target_name_lib} PUBLIC"
    " \"$<BUILD_INTERFACE:${Python3_INCLUDE_DIRS}>\" \"$<BUILD_INTERFACE:${Python3_NumPy_INCLUDE_DIRS}>\")"
)


def fix_prefix(prefix: Path) -> int:
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = 0
    for cmake_file in sorted(prefix.glob("share/*/cmake/*.cmake")):
        text = cmake_file.read_text()
        fixed = BUILD_NUMPY_INCLUDE.sub(numpy_include, text)
        fixed = BUILD_PYTHON_INCLUDE.sub(python_include, fixed)
        fixed = fixed.replace(GENERATOR_PY_INCLUDES, GENERATOR_PY_INCLUDES_FIXED)
        if fixed != text:
            cmake_file.write_text(fixed)
            changed += 1
    return changed


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    prefix = Path(sys.argv[1])
    if not (prefix / "share" / "rosidl_generator_py").is_dir():
        print(f"fix_ros_wheel_cmake: {prefix} holds no ROS 2 wheels (share/rosidl_generator_py missing)",
              file=sys.stderr)
        return 1
    changed = fix_prefix(prefix)
    print(f"fix_ros_wheel_cmake: {changed} CMake file(s) rewritten under {prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
