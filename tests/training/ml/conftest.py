"""Fixtures for the ML core: the tiny base model (built once per session) and small JSONL files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

QA = [
    ("How do I reset my password?", "Use the link on the sign-in page."),
    ("Where is my parcel?", "It left our warehouse today."),
    ("Can I return a sale item?", "Yes, within 30 days."),
    ("How do I delete my account?", "Go to Settings, then Account."),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def prompt_completion_rows(n: int = 32) -> list[dict]:
    return [{"prompt": QA[i % 4][0], "completion": " " + QA[i % 4][1]} for i in range(n)]


def messages_rows(n: int = 32) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": QA[i % 4][0]},
                {"role": "assistant", "content": QA[i % 4][1]},
            ]
        }
        for i in range(n)
    ]


def preference_rows(n: int = 32, *, conversational: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        question, answer = QA[i % 4]
        if conversational:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": question}],
                    "chosen": [{"role": "assistant", "content": answer}],
                    "rejected": [{"role": "assistant", "content": "No idea, sorry."}],
                }
            )
        else:
            rows.append(
                {"prompt": question, "chosen": " " + answer, "rejected": " No idea, sorry."}
            )
    return rows


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from training.ml.models import prepare_tiny

    return prepare_tiny(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_jsonl(folder / "sft_pc.jsonl", prompt_completion_rows())
    write_jsonl(folder / "sft_messages.jsonl", messages_rows())
    write_jsonl(folder / "dpo.jsonl", preference_rows())
    write_jsonl(folder / "dpo_chat.jsonl", preference_rows(16, conversational=True))
    return folder


def state_dict_copy(model) -> dict:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="session")
def sft_run(tiny_dir, data_dir, tmp_path_factory):
    """One SFT run on prompt/completion rows (30 steps, eval every 10), shared by several tests."""
    from training.ml.train import train

    events: list[dict] = []
    out = tmp_path_factory.mktemp("runs") / "sft"
    result = train(
        base_dir=tiny_dir,
        train_file=data_dir / "sft_pc.jsonl",
        eval_file=data_dir / "sft_pc.jsonl",
        method="sft",
        settings={"max_steps": 30, "batch_size": 8, "eval_steps": 10},
        out_dir=out,
        on_progress=events.append,
        manifest_extra={"dataset_version": 7},
        keep_model=True,
    )
    return result, events


def completion_loss(model, tokenizer, prompt: str, completion: str) -> float:
    """Mean loss of `completion` after `prompt` (what SFT trains), for before/after comparisons."""
    import torch

    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    full = tokenizer(prompt + completion + tokenizer.eos_token, add_special_tokens=False).input_ids
    labels = [-100] * len(prompt_ids) + full[len(prompt_ids) :]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([full]), labels=torch.tensor([labels]))
    return out.loss.item()
