"""Training settings: validation names the field, defaults per method and size, unknown keys."""

from __future__ import annotations

import pytest

from training.ml.config import (
    LoraSettings,
    SettingsError,
    TrainSettings,
    defaults_for,
    describe_settings,
    validate_target_modules,
)


def error_for(**kwargs) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        TrainSettings.from_dict(kwargs)
    return caught.value


def test_rank_zero_is_refused_naming_lora_r():
    with pytest.raises(SettingsError) as caught:
        LoraSettings(r=0)
    assert caught.value.field == "lora.r"
    assert str(caught.value) == "lora.r: must be a positive integer, got 0"


def test_rank_zero_in_a_config_dict_is_refused_naming_lora_r():
    assert error_for(lora={"r": 0}).field == "lora.r"


def test_negative_learning_rate_is_refused_naming_the_field():
    error = error_for(learning_rate=-0.001)
    assert error.field == "learning_rate"
    assert str(error).startswith("learning_rate: must be a number above 0")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"method": "ppo"}, "method"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"grad_accumulation": -1}, "grad_accumulation"),
        ({"max_steps": 0}, "max_steps"),
        ({"num_epochs": 0}, "num_epochs"),
        ({"max_length": 8}, "max_length"),
        ({"eval_steps": 0}, "eval_steps"),
        ({"beta": 0}, "beta"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": True}, "learning_rate"),
        ({"precision": "fp8"}, "precision"),
        ({"lora": {"dropout": 1.0}}, "lora.dropout"),
        ({"lora": {"alpha": -2}}, "lora.alpha"),
        ({"lora": {"target_modules": []}}, "lora.target_modules"),
        ({"lora": {"target_modules": ["all-linear", "q_proj"]}}, "lora.target_modules"),
        ({"lora": "big"}, "lora"),
    ],
)
def test_each_bad_value_is_refused_naming_its_field(overrides, field):
    error = error_for(**overrides)
    assert error.field == field
    assert str(error).startswith(field + ": ")


def test_unknown_keys_are_refused_naming_them():
    error = error_for(learning_rate=1e-4, lerning_rate=1e-4, epochs=3)
    assert error.field == "epochs"
    assert "unknown settings epochs, lerning_rate" in str(error)
    assert "learning_rate" in str(error)  # the known names are listed


def test_unknown_lora_key_is_refused_with_its_dotted_name():
    error = error_for(lora={"rank": 8})
    assert error.field == "lora.rank"
    assert "unknown setting lora.rank" in str(error)


def test_from_dict_fills_missing_keys_from_the_defaults_and_round_trips():
    defaults = defaults_for("dpo", 135_000_000)
    settings = TrainSettings.from_dict(
        {"method": "dpo", "beta": 0.2, "lora": {"r": 4}}, defaults=defaults
    )
    assert settings.beta == 0.2 and settings.lora.r == 4
    assert settings.learning_rate == defaults.learning_rate
    assert settings.lora.alpha == defaults.lora.alpha
    assert TrainSettings.from_dict(settings.to_dict()) == settings


def test_target_modules_may_be_given_as_a_comma_separated_string():
    assert LoraSettings(target_modules="q_proj, v_proj").target_modules == ["q_proj", "v_proj"]


def test_defaults_depend_on_method_and_model_size():
    tiny_sft, small_sft = defaults_for("sft", 250_000), defaults_for("sft", 135_000_000)
    small_dpo, large_dpo = defaults_for("dpo", 135_000_000), defaults_for("dpo", 7_000_000_000)
    assert tiny_sft.learning_rate > small_sft.learning_rate > small_dpo.learning_rate
    assert small_dpo.learning_rate > large_dpo.learning_rate
    assert large_dpo.gradient_checkpointing and not small_sft.gradient_checkpointing
    assert small_sft.lora.r == 16 and tiny_sft.lora.r == 8
    assert defaults_for("sft", None) == defaults_for("sft", 10**10)  # unknown size: cautious
    with pytest.raises(SettingsError, match="^method: "):
        defaults_for("rlhf", 1)


def test_unknown_target_module_is_refused_naming_it(tiny_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    with pytest.raises(SettingsError) as caught:
        validate_target_modules(LoraSettings(target_modules=["q_proj", "query_key_value"]), model)
    assert caught.value.field == "lora.target_modules"
    assert "no module named 'query_key_value'" in str(caught.value)
    assert "q_proj" in str(caught.value)  # what would work is listed
    matched = validate_target_modules(LoraSettings(target_modules=["q_proj", "v_proj"]), model)
    assert len(matched) == 4  # two layers
    everything = validate_target_modules(LoraSettings(), model)
    assert not any(path.endswith("lm_head") for path in everything) and len(everything) == 14


def test_every_setting_has_help_text():
    rows = describe_settings()
    names = {row["name"] for row in rows}
    assert {"learning_rate", "beta", "lora.r", "lora.target_modules"} <= names
    assert all(row["help"] for row in rows)
