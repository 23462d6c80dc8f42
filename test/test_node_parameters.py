"""dpt_node's parameter table: validation, and the README and config/dpt.yaml agree with it."""
from pathlib import Path

import pytest

from dpt_ros import node_parameters as params

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name, value, fragment", [
    ("precision", "fp64", "precision must be one of fp32, fp16, bf16"),
    ("device", "gpu", "device must be auto, cpu, cuda or cuda:N"),
    ("input_size", 100, "multiple of 32 (DPT variants) or 14 (Depth Anything V2 variants)"),
    ("input_size", -32, ">= 0"),
    ("cloud.stride", 0, ">= 1"),
    ("colored.alpha", 1.5, "<= 1.0"),
    ("model.tasks", "depth+segmentation", "depth, segmentation, both"),
    ("model.variant", "dpt_huge", "unknown variant 'dpt_huge'"),
    ("qos.input.reliability", "sometimes", "best_effort, reliable"),
])
def test_invalid_values_are_refused_with_the_reason(name, value, fragment):
    assert fragment in params.validate(name, value)


@pytest.mark.parametrize("name, value", [
    ("precision", "bf16"), ("device", "cuda:1"), ("device", "auto"), ("input_size", 0), ("input_size", 512),
    ("model.variant", "dpt_hybrid_kitti"), ("model.segmentation_variant", ""), ("model.tasks", "both"),
    ("use_sim_time", True),
])
def test_valid_values_pass(name, value):
    assert params.validate(name, value) is None


def test_every_default_is_valid():
    for spec in params.PARAMETERS:
        assert params.validate(spec.name, spec.default) is None, spec.name


def test_tasks_expand():
    assert params.tasks_of("both") == ("depth", "segmentation")
    assert params.tasks_of("segmentation") == ("segmentation",)


def test_readme_documents_every_parameter_with_its_default():
    readme = (REPO / "README.md").read_text()
    for spec in params.PARAMETERS:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{spec.name}` |")), None)
        assert row is not None, f"README lacks a row for {spec.name}"
        default = spec.default
        shown = repr(default) if isinstance(default, str) else str(default).lower() if isinstance(default, bool) \
            else str(default)
        assert f"`{shown}`" in row, f"README default of {spec.name} differs: {row}"


@pytest.mark.parametrize("variant, expected", [
    ("dpt_hybrid_kitti", "dpt_hybrid"), ("dpt_hybrid_nyu", "dpt_hybrid"), ("dpt_large", "dpt_large"),
    ("dpt_tiny", "dpt_tiny"),
])
def test_empty_segmentation_variant_means_the_same_backbone(variant, expected):
    from dpt_ros.model_config import segmentation_variant_for

    assert segmentation_variant_for(variant) == expected


def test_compile_choices_are_the_engines_modes():
    from dpt_ros.model_runner import COMPILE_MODES

    assert params.PARAMETERS_BY_NAME["compile"].choices == COMPILE_MODES
    assert params.validate("compile", "cuda_graph") is None
    assert "compile must be one of eager, torch_compile, cuda_graph" in params.validate("compile", "tensorrt")


def test_every_string_choice_stays_a_string_when_typed_on_the_command_line():
    """`-p name:=value` is parsed as YAML: a choice like off/on/yes/no would arrive as a bool and make
    the node's declaration fail (found with compile:=off, hence "eager")."""
    import yaml

    for spec in params.PARAMETERS:
        if isinstance(spec.default, str):
            for value in (spec.choices or ()) + (spec.default,):
                if value:
                    assert isinstance(yaml.safe_load(value), str), f"{spec.name}:={value} parses as non-string"


@pytest.mark.parametrize("values, problem", [
    ({"model.variant": "depth_anything_v2_vits", "model.tasks": "depth", "input_size": 70}, None),
    ({"model.variant": "depth_anything_v2_vits", "model.tasks": "depth", "input_size": 64},
     "input_size must be a multiple of 14 for depth_anything_v2_vits's depth model (or 0 for its own size); got 64"),
    ({"model.variant": "dpt_hybrid", "model.tasks": "depth", "input_size": 70},
     "input_size must be a multiple of 32 for dpt_hybrid's depth model (or 0 for its own size); got 70"),
    ({"model.variant": "dpt_hybrid", "model.tasks": "both", "input_size": 384}, None),
    # Depth Anything V2 depth with DPT labels: both networks take the size
    ({"model.variant": "depth_anything_v2_vits", "model.tasks": "both", "model.segmentation_variant": "dpt_hybrid",
      "input_size": 70}, "input_size must be a multiple of 32 for dpt_hybrid's segmentation model"),
    ({"model.variant": "depth_anything_v2_vits", "model.tasks": "both", "model.segmentation_variant": "dpt_hybrid",
      "input_size": 448}, None),
    ({"model.variant": "depth_anything_v2_vits", "model.tasks": "segmentation",
      "model.segmentation_variant": "dpt_hybrid", "input_size": 448}, None),
    ({"model.variant": "depth_anything_v2_vits", "model.tasks": "depth", "input_size": 0}, None),
])
def test_input_size_must_fit_each_network_the_variants_select(values, problem):
    found = params.validate_together(values)
    assert found == problem if problem is None else problem in found
