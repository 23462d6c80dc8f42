"""The proposed alignment.* parameters: they agree with the aligner, and the example files
config/lidar_aligned.yaml and config/rgbd_aligned.yaml use them with valid values.

Values are checked with dpt_node's own validation (node_parameters.validate) after adding the
alignment rows to its table, as the node will once it declares them."""
from pathlib import Path

import pytest
import yaml

from dpt_ros import node_parameters as params
from dpt_ros.alignment import AlignerSettings
from dpt_ros.alignment_parameters import ALIGNMENT_PARAMETERS, aligner_settings, alignment_problem

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config"
# What each example must set.
EXAMPLES = {
    "lidar_aligned.yaml": {"alignment.source": "points", "model.variant": "dpt_hybrid",
                           "alignment.extrinsic": [0.0, -0.08, -0.12, 0.5, -0.5, 0.5, 0.5]},
    "rgbd_aligned.yaml": {"alignment.source": "depth_image", "alignment.registered": True,
                          "model.variant": "dpt_hybrid", "alignment.max_depth": 4.0},
}


@pytest.fixture
def node_table(monkeypatch):
    """node_parameters' lookup table with the alignment rows added."""
    for spec in ALIGNMENT_PARAMETERS:
        monkeypatch.setitem(params.PARAMETERS_BY_NAME, spec.name, spec)
    return params.PARAMETERS_BY_NAME


def flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_parameters(path):
    document = yaml.safe_load(path.read_text())
    assert list(document) == ["/**"] and list(document["/**"]) == ["ros__parameters"], path.name
    return flatten(document["/**"]["ros__parameters"])


def test_defaults_are_the_aligners_and_valid(node_table):
    names = [spec.name for spec in ALIGNMENT_PARAMETERS]
    assert len(names) == len(set(names)) and not set(names) & {spec.name for spec in params.PARAMETERS}
    assert aligner_settings({spec.name: spec.default for spec in ALIGNMENT_PARAMETERS}) == AlignerSettings()
    for spec in ALIGNMENT_PARAMETERS:
        assert params.validate(spec.name, spec.default) is None, spec.name
        assert alignment_problem(spec.name, spec.default) is None, spec.name
        for value in (spec.choices or ()):  # `-p alignment.source:=points` must stay a string
            assert isinstance(yaml.safe_load(value), str), value


def test_every_aligner_setting_but_the_seed_is_a_parameter():
    from dataclasses import fields

    reachable = set()
    for spec in ALIGNMENT_PARAMETERS:
        changed = aligner_settings({spec.name: spec.maximum if spec.maximum is not None else spec.default})
        reachable |= {f.name for f in fields(AlignerSettings) if getattr(changed, f.name) != getattr(AlignerSettings(), f.name)}
    assert reachable | {"mode", "seed"} == {f.name for f in fields(AlignerSettings)}
    assert aligner_settings({"alignment.mode": "scale_only"}).mode == "scale_only"


def test_aligner_settings_take_integers_for_doubles_and_refuse_bad_values():
    settings = aligner_settings({"alignment.timeout": 2, "alignment.fit.min_inliers": 50})
    assert settings.timeout == 2.0 and isinstance(settings.timeout, float) and settings.min_inliers == 50
    with pytest.raises(ValueError, match="mode must be one of full, scale_only"):
        aligner_settings({"alignment.mode": "affine"})


def test_extrinsic_problems_are_explained():
    assert alignment_problem("alignment.extrinsic", [0.0] * 6 + [1.0]) is None
    assert "7 finite numbers" in alignment_problem("alignment.extrinsic", [0.0, 0.0, 1.0])
    assert "not a rotation" in alignment_problem("alignment.extrinsic", [0.0] * 7)


@pytest.mark.parametrize("file_name", sorted(EXAMPLES))
def test_example_files_set_valid_alignment_parameters(file_name, node_table):
    parameters = load_parameters(CONFIG / file_name)
    for name, expected in EXAMPLES[file_name].items():
        assert parameters.get(name) == expected, name
    unknown = set(parameters) - set(node_table)
    assert not unknown, f"unknown parameters {sorted(unknown)}"
    for name, value in parameters.items():
        assert params.validate(name, value) is None, (name, params.validate(name, value))
        assert alignment_problem(name, value) is None, name
    aligner_settings(parameters)  # raises on a bad combination
    assert parameters.get("alignment.min_depth", 0.1) < parameters.get("alignment.max_depth", float("inf"))


@pytest.mark.ros
@pytest.mark.parametrize("file_name", sorted(EXAMPLES))
def test_rcl_reads_the_example_files_with_the_declared_types(file_name):
    import rclpy
    from rclpy.parameter import Parameter

    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(CONFIG / file_name)], context=context)
    try:
        node = rclpy.create_node("aligned_dpt", namespace="front", context=context,
                                 automatically_declare_parameters_from_overrides=True)
        try:
            for spec in ALIGNMENT_PARAMETERS:
                if not node.has_parameter(spec.name):
                    continue
                parameter = node.get_parameter(spec.name)
                if isinstance(spec.default, list):
                    assert parameter.type_ == Parameter.Type.DOUBLE_ARRAY, spec.name
                else:
                    assert parameter.type_ == Parameter.Type.from_parameter_value(spec.default), spec.name
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
