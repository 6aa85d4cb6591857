"""Generator: one base model, adapters attached and switched without reloading it."""

from __future__ import annotations

import shutil

import pytest

from tests.training.ml.conftest import QA
from training.ml.generate import Generator
from training.ml.models import BaseModelError

pytestmark = pytest.mark.filterwarnings(
    # peft asks transformers for a renamed attribute; harmless, and not Redline's to fix.
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)


@pytest.fixture(scope="module")
def generator(tiny_dir):
    return Generator(tiny_dir)


def test_base_model_generates_text_for_strings_and_chats(generator):
    chat = [{"role": "user", "content": QA[0][0]}]
    outputs = generator.generate([QA[0][0], chat], max_new_tokens=6, temperature=0)
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)
    assert any(outputs)  # a random tiny model may stop at once on one of them, not on both


def test_generation_is_reproducible_with_a_seed(generator):
    prompts = [QA[1][0], QA[2][0]]
    first = generator.generate(prompts, max_new_tokens=8, temperature=1.0, seed=3)
    assert generator.generate(prompts, max_new_tokens=8, temperature=1.0, seed=3) == first


@pytest.mark.slow
def test_adapters_are_switched_without_reloading_the_base_model(generator, sft_run, tmp_path):
    result, _ = sft_run
    base_model = generator.model
    prompts = [QA[0][0], QA[1][0]]
    before = generator.generate(prompts, max_new_tokens=8, temperature=0)
    first = generator.load_adapter(result.out_dir, name="first")
    second_dir = tmp_path / "second"
    shutil.copytree(result.out_dir, second_dir)
    second = generator.load_adapter(second_dir, name="second")
    assert generator._peft.get_base_model() is base_model
    tuned = generator.generate(prompts, adapter=first, max_new_tokens=8, temperature=0)
    assert tuned != before and all(tuned)
    assert generator.generate(prompts, adapter=second, max_new_tokens=8, temperature=0) == tuned
    # adapter=None is the base model again, with the adapters still attached
    assert generator.generate(prompts, max_new_tokens=8, temperature=0) == before
    generator.unload_adapter(first)
    generator.unload_adapter(second)
    assert generator.adapters == {} and generator._peft is None
    assert generator.generate(prompts, max_new_tokens=8, temperature=0) == before


def test_unknown_adapters_and_bad_prompts_are_refused(generator, tmp_path):
    with pytest.raises(ValueError, match="no adapter named 'nope'"):
        generator.generate(["Hi"], adapter="nope")
    with pytest.raises(ValueError, match="list of prompts"):
        generator.generate("Hi")
    with pytest.raises(BaseModelError, match="not an adapter folder"):
        generator.load_adapter(tmp_path)
