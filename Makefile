# Newcomer entry points (see README): `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
ENV := source scripts/env.sh
PYTEST_ARGS ?=

.PHONY: setup build demo test test-fast bench-model bench-node bench-multi-camera bench-alignment bench-fleet clean

setup:
	bash scripts/setup.sh

build: setup

# The node on the built-in demo stream: demo_camera -> dpt_node -> recorder, outputs under output/demo.
demo: setup
	$(ENV) && python -m dpt_ros.demo_run $(DEMO_ARGS)

# The whole test suite against the colcon install space (fails if ROS pieces are missing).
test: setup
	$(ENV) && DPT_ROS_REQUIRE_ROS=1 pytest $(PYTEST_ARGS)

test-fast: setup
	$(ENV) && DPT_ROS_REQUIRE_ROS=1 pytest -m "not slow" $(PYTEST_ARGS)

bench-model: setup
	$(ENV) && python benchmarks/model.py $(BENCH_ARGS)

bench-node: setup
	$(ENV) && python benchmarks/node.py $(BENCH_ARGS)

bench-multi-camera: setup
	$(ENV) && python benchmarks/multi_camera.py $(BENCH_ARGS)

bench-alignment: setup
	$(ENV) && python benchmarks/alignment.py $(BENCH_ARGS)

bench-fleet: setup
	$(ENV) && python benchmarks/fleet.py $(BENCH_ARGS)

clean:
	rm -rf build install log
