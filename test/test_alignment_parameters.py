"""The alignment.* parameters: rows of dpt_node's table that agree with the aligner, their
validation (the extrinsic, rules between parameters), and the example files
config/lidar_aligned.yaml and config/rgbd_aligned.yaml use them with valid values.

(config/dpt.yaml and rcl's reading of every file are checked with the other parameters in
test_install_layout.py.)"""
import array
from pathlib import Path

import pytest
import yaml

from dpt_ros import node_parameters as params
from dpt_ros.alignment import AlignerSettings
from dpt_ros.alignment_parameters import ALIGNMENT_PARAMETERS, aligner_settings, alignment_problem, sample_settings
from dpt_ros.sparse_depth import SampleSettings

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config"
# What each example must set.
EXAMPLES = {
    "lidar_aligned.yaml": {"alignment.source": "points", "model.variant": "dpt_hybrid",
                           "alignment.extrinsic": [0.0, -0.08, -0.12, 0.5, -0.5, 0.5, 0.5]},
    "rgbd_aligned.yaml": {"alignment.source": "depth_image", "alignment.registered": True,
                          "model.variant": "dpt_hybrid", "alignment.max_depth": 4.0},
}


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


def test_the_rows_are_in_the_node_table_once_with_the_aligners_defaults():
    names = [spec.name for spec in params.PARAMETERS]
    assert len(names) == len(set(names))
    assert params.PARAMETERS[-len(ALIGNMENT_PARAMETERS):] == ALIGNMENT_PARAMETERS
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


@pytest.mark.parametrize("value", [
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    [0, 0, 1, 0, 0, 0, 1],                                 # `-p 'alignment.extrinsic:=[0, 0, 1, 0, 0, 0, 1]'`
    array.array("d", [0.1, 0.0, 0.0, 0.5, -0.5, 0.5, 0.5]),  # what rclpy hands over for a double array
])
def test_the_node_accepts_an_extrinsic_as_a_list_an_integer_list_or_a_double_array(value):
    assert params.validate("alignment.extrinsic", value) is None


@pytest.mark.parametrize("value, fragment", [
    ("0 0 0 0 0 0 1", "must be a list of numbers"),
    (["0", "0", "0", "0", "0", "0", "1"], "must be a list of numbers"),
    ([True] * 7, "must be a list of numbers"),
    ([0.0, 0.0, 1.0], "7 finite numbers"),
    ([0.0] * 7, "not a rotation"),
])
def test_the_node_refuses_a_bad_extrinsic_with_the_reason(value, fragment):
    assert fragment in params.validate("alignment.extrinsic", value)


@pytest.mark.parametrize("name, value, fragment", [
    ("alignment.source", "lidar", "alignment.source must be one of none, depth_image, points"),
    ("alignment.mode", "affine", "alignment.mode must be one of full, scale_only"),
    ("alignment.timeout", -1.0, ">= 0.0"),
    ("alignment.fit.min_inliers", 1, ">= 2"),
    ("alignment.registered", "yes", "must be a bool"),
])
def test_bad_alignment_values_are_refused_with_the_reason(name, value, fragment):
    assert fragment in params.validate(name, value)


def defaults(**changes):
    values = {spec.name: spec.default for spec in params.PARAMETERS}
    values.update(changes)
    return values


def test_rules_between_alignment_parameters():
    assert params.validate_together(defaults()) is None
    assert params.validate_together(defaults(**{"alignment.min_depth": 0.5, "alignment.max_depth": 0.0})) is None
    assert "alignment.max_depth (0.5) must be above alignment.min_depth (0.5)" in params.validate_together(
        defaults(**{"alignment.min_depth": 0.5, "alignment.max_depth": 0.5}))
    assert "alignment.fit.min_inliers (100) exceeds alignment.max_samples (50)" in params.validate_together(
        defaults(**{"alignment.fit.min_inliers": 100, "alignment.max_samples": 50}))


def test_sample_settings_from_the_parameters():
    assert sample_settings(defaults()) == SampleSettings(min_depth=0.1)  # max_depth 0 = no limit
    settings = sample_settings(defaults(**{"alignment.extrinsic": [0, 0, 1, 0, 0, 0, 1], "alignment.max_depth": 4,
                                           "alignment.registered": False, "alignment.max_samples": 100}))
    assert settings.extrinsic == (0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0) and settings.max_depth == 4.0
    assert not settings.registered and settings.max_samples == 100
    assert settings.uses_extrinsic("depth_image") and settings.uses_extrinsic("points")
    assert not sample_settings(defaults()).uses_extrinsic("depth_image")


@pytest.mark.parametrize("file_name", sorted(EXAMPLES))
def test_example_files_set_valid_alignment_parameters(file_name):
    parameters = load_parameters(CONFIG / file_name)
    for name, expected in EXAMPLES[file_name].items():
        assert parameters.get(name) == expected, name
    unknown = set(parameters) - set(params.PARAMETERS_BY_NAME)
    assert not unknown, f"unknown parameters {sorted(unknown)}"
    for name, value in parameters.items():
        assert params.validate(name, value) is None, (name, params.validate(name, value))
    values = defaults(**parameters)
    assert params.validate_together(values) is None
    aligner_settings(values)  # raises on a bad combination
    assert sample_settings(values).max_depth > sample_settings(values).min_depth
