"""Base models: the tiny model, the chat template's generation markers, clear loading errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from training.ml.chat_template import chatml_template, has_generation_markers
from training.ml.files import sha256_file
from training.ml.models import (
    TINY_SPECIAL_TOKENS,
    BaseModelError,
    check_reference,
    load_base,
    model_info,
    prepare_tiny,
)


def test_tiny_model_reloads_through_from_pretrained(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    n_params = sum(p.numel() for p in model.parameters())
    assert 100_000 < n_params < 1_000_000
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert len(tokenizer) == model.config.vocab_size == 2048
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<|endoftext|>",
        "<|im_end|>",
        "<|pad|>",
    )
    assert tokenizer.convert_tokens_to_ids(TINY_SPECIAL_TOKENS) == [0, 1, 2, 3]
    text = "How do I reset my password?"
    assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_tiny_model_is_deterministic(tiny_dir, tmp_path):
    again = prepare_tiny(tmp_path / "tiny")
    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert sha256_file(again / name) == sha256_file(tiny_dir / name), name


def test_parameter_count_is_read_without_loading_the_model(tiny_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    info = model_info(str(tiny_dir))
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["name"] == "tiny" and "model.safetensors" in info["weights_sha256"]


def test_tiny_chat_template_masks_assistant_turns_with_generation_markers(tiny_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert has_generation_markers(tokenizer.chat_template)
    chat = [
        {"role": "user", "content": "Where is my parcel?"},
        {"role": "assistant", "content": "It left today."},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "You are welcome."},
    ]
    assert tokenizer.apply_chat_template(chat, tokenize=False) == (
        "<|im_start|>user\nWhere is my parcel?<|im_end|>\n"
        "<|im_start|>assistant\nIt left today.<|im_end|>\n"
        "<|im_start|>user\nThanks<|im_end|>\n"
        "<|im_start|>assistant\nYou are welcome.<|im_end|>\n"
    )
    out = tokenizer.apply_chat_template(
        chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    # Both answers and their end-of-turn token are trained; nothing of the user's turns is.
    assert tokenizer.decode(masked) == "It left today.<|im_end|>You are welcome.<|im_end|>"
    prompt = tokenizer.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_chatml_template_prepends_a_default_system_prompt(tiny_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    template = chatml_template("Be brief.")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}],
        chat_template=template,
        tokenize=False,
        add_generation_prompt=True,
    )
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    own_system = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    assert "Be brief." not in tokenizer.apply_chat_template(
        own_system, chat_template=template, tokenize=False
    )
    with pytest.raises(ValueError):
        chatml_template("it's")


def test_missing_folder_fails_with_a_clear_message(tmp_path):
    with pytest.raises(BaseModelError, match=r"base model folder .*nowhere does not exist"):
        load_base(str(tmp_path / "nowhere"))


def test_folder_without_a_model_fails_with_a_clear_message(tmp_path):
    with pytest.raises(BaseModelError, match="is not a model folder"):
        load_base(str(tmp_path))


def test_malformed_hub_id_fails_with_a_clear_message():
    with pytest.raises(BaseModelError, match="neither an existing folder nor a valid hub id"):
        check_reference("not a model id")


def test_unreachable_hub_id_fails_with_a_clear_message(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BaseModelError) as caught:
        load_base("redline-tests/no-such-model", revision="main")
    message = str(caught.value)
    assert message.startswith("base model 'redline-tests/no-such-model' at revision 'main'")
    assert "cannot be reached" in message
    assert "HFValidationError" not in message and "Traceback" not in message


def test_importing_the_ml_package_does_not_import_torch():
    code = (
        "import sys\n"
        "import training.ml, training.ml.config, training.ml.models, training.ml.files\n"
        "import training.ml.train, training.ml.generate, training.ml.chat_template\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
