"""What importing modules drags in, checked in a fresh interpreter (the ROS-free core's promise)."""
from __future__ import annotations

import subprocess
import sys

ROS_PACKAGES = ("rclpy", "sensor_msgs", "std_msgs")


def packages_imported_by(modules: tuple[str, ...], packages: tuple[str, ...] = ROS_PACKAGES) -> list[str]:
    """The modules of ``packages`` loaded by importing ``modules`` in a new Python process."""
    code = (f"import sys\nimport {', '.join(modules)}\n"
            f"print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] in {tuple(packages)!r})))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()
