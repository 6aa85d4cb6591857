"""Real consumers: every file a version writes loads with ``datasets.load_dataset("json")``,
and trl's SFTTrainer, DPOTrainer and KTOTrainer each run a training step on it, standard
and conversational, with a tiny model and tokenizer built here (no downloads)."""

from __future__ import annotations

import copy
import os

import pytest

from training import selectors

# Nothing here may reach the network: the model and tokenizer are built in the test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::FutureWarning"),  # transformers' renames, not ours
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A byte-level BPE tokenizer trained on a few lines, with a chat template, and a
    2-layer Llama of hidden size 16 built from a config."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<pad>", "<s>", "<|im_start|>", "<|im_end|>"]
    lines = [
        "What is the capital of France? Paris.",
        "Quote backslash newline tab unicode accept correct reject answer question",
        "user assistant system Be brief. Thanks for asking, here is what to do.",
    ] * 20
    tokenizer.train_from_iterator(
        lines,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|im_end|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    return fast, lambda: LlamaForCausalLM(config)


def decided_zoo(project, expert, decide_item, *, chat: bool) -> None:
    """Accepts, corrections, rejections and comparisons over a dozen prompts."""
    from curation.services.settings import project_settings_update

    project_settings_update(project=project, review_modes=["correct", "compare"])
    for n in range(12):
        text = f"Question {n}: what is the capital of France?"
        prompt = {"messages": [{"role": "user", "content": text}]} if chat else {"prompt": text}
        kind = n % 4
        if kind == 0:
            decide_item(
                project, [(expert, "accept", {})], **prompt, candidates=[(f"Paris {n}.", "m")]
            )
        elif kind == 1:
            decide_item(
                project,
                [(expert, "correct", {"corrected_output": f"Paris, France {n}."})],
                **prompt,
                candidates=[(f"Lyon {n}.", "m")],
            )
        elif kind == 2:
            decide_item(
                project, [(expert, "reject", {})], **prompt, candidates=[(f"Rome {n}.", "m")]
            )
        else:
            decide_item(
                project,
                [(expert, "accept", lambda c: {"preferred_candidate": c[0].pk})],
                **prompt,
                candidates=[(f"Paris {n}!", "a"), (f"Berlin {n}.", "b")],
            )


@pytest.fixture(params=["standard", "conversational"])
def version(request, project, personas, experts, decide_item, build):
    decided_zoo(project, experts[0], decide_item, chat=request.param == "conversational")
    built = build(
        project, personas["manager"], eval_fraction=0.25, seed=1, outcomes=["accepted", "rejected"]
    )
    assert built.status == "succeeded", built.error
    assert built.format == request.param
    return built


def load(version, name, tmp_path):
    import datasets

    path = selectors.version_dir(version) / name
    return datasets.load_dataset(
        "json", data_files=str(path), split="train", cache_dir=str(tmp_path)
    )


TRL_COLUMNS = {
    ("sft", "standard"): {"prompt", "completion"},
    ("sft", "conversational"): {"messages"},
    ("preference", "standard"): {"prompt", "chosen", "rejected"},
    ("preference", "conversational"): {"prompt", "chosen", "rejected"},
    ("kto", "standard"): {"prompt", "completion", "label"},
    ("kto", "conversational"): {"prompt", "completion", "label"},
}


def test_every_file_loads_with_datasets_in_trls_columns(version, tmp_path):
    from trl.data_utils import is_conversational

    names = {f["name"] for f in version.files}
    assert {"sft.train.jsonl", "preference.train.jsonl", "kto.train.jsonl"} <= names
    assert any(".eval." in name for name in names)
    for entry in version.files:
        dataset = load(version, entry["name"], tmp_path)
        assert len(dataset) == entry["rows"]
        assert set(dataset.column_names) == TRL_COLUMNS[(entry["kind"], version.format)]
        assert is_conversational(dataset[0]) is (version.format == "conversational")
        lineage = load(version, entry["lineage"]["name"], tmp_path)
        assert lineage["row"] == list(range(entry["rows"]))


def args_for(config_class, tmp_path, **extra):
    return config_class(
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        max_length=128,
        **extra,
    )


def trained_one_step(trainer) -> None:
    result = trainer.train()
    assert trainer.state.global_step == 1
    assert result.training_loss == result.training_loss  # a number, not NaN


def test_sft_trainer_runs_a_step_on_the_sft_file(version, tiny, tmp_path):
    from trl import SFTConfig, SFTTrainer

    tokenizer, model = tiny
    trainer = SFTTrainer(
        model=model(),
        args=args_for(SFTConfig, tmp_path),
        train_dataset=load(version, "sft.train.jsonl", tmp_path),
        processing_class=tokenizer,
    )
    trained_one_step(trainer)


def test_dpo_trainer_runs_a_step_on_the_preference_file(version, tiny, tmp_path):
    from trl import DPOConfig, DPOTrainer

    tokenizer, model = tiny
    policy = model()
    trainer = DPOTrainer(
        model=policy,
        ref_model=copy.deepcopy(policy),  # a model built from a config has no path to reload
        args=args_for(DPOConfig, tmp_path),
        train_dataset=load(version, "preference.train.jsonl", tmp_path),
        processing_class=tokenizer,
    )
    trained_one_step(trainer)


def test_kto_trainer_runs_a_step_on_the_kto_file(version, tiny, tmp_path):
    from trl import KTOConfig, KTOTrainer

    tokenizer, model = tiny
    dataset = load(version, "kto.train.jsonl", tmp_path)
    assert set(dataset["label"]) == {True, False}
    policy = model()
    trainer = KTOTrainer(
        model=policy,
        ref_model=copy.deepcopy(policy),
        args=args_for(KTOConfig, tmp_path),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trained_one_step(trainer)
