"""model_config.build_engine: the one builder of the node and the evaluators (random-weights rule,
segmentation variant choice, errors that name the parameter to change)."""
import pytest

from dpt_ros.model_config import ModelConfig, ModelLoadError, build_engine


def test_auto_weights_of_a_variant_without_checkpoint_need_random_weights_allowed():
    with pytest.raises(ModelLoadError, match="dpt_tiny has no official depth checkpoint.*model.allow_random_weights"):
        build_engine(ModelConfig("dpt_tiny", weights="auto", device="cpu"))
    warnings = []
    engine = build_engine(ModelConfig("dpt_tiny", weights="auto", allow_random_weights=True, device="cpu"),
                          warn=warnings.append)
    assert engine.tasks == ("depth",)
    assert len(warnings) == 1 and "RANDOM weights" in warnings[0]


def test_empty_weights_are_refused_unless_random_weights_are_allowed():
    with pytest.raises(ModelLoadError, match="model.weights is empty"):
        build_engine(ModelConfig("dpt_tiny", weights="", device="cpu"))


def test_both_tasks_build_both_models_with_random_weights_allowed():
    engine = build_engine(ModelConfig("dpt_tiny", weights="", segmentation_weights="", allow_random_weights=True,
                                      tasks=("depth", "segmentation"), device="cpu"), warn=lambda _: None)
    assert engine.tasks == ("depth", "segmentation")


def test_a_missing_file_is_one_load_error_naming_it():
    with pytest.raises(ModelLoadError, match="/missing/weights.pt"):
        build_engine(ModelConfig("dpt_tiny", weights="/missing/weights.pt", device="cpu"))
