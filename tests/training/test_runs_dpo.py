# ruff: noqa: F811 (fixtures imported from test_runs are used as arguments)
"""DPO end to end through Django: experts correct answers, the real dataset build turns the
corrections into preference pairs, ``run_execute`` trains DPO on the tiny model and publishes
an adapter that reloads with ``PeftModel.from_pretrained`` and generates. A version without
the kind a method needs is refused naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from tests.training.test_runs import sft_version, tiny, tiny_prepared  # noqa: F401 (fixtures)
from training.models import Adapter, RunStatus, TrainingRun
from training.services.runs import run_execute, training_run_create

pytestmark = pytest.mark.django_db

ANSWERS = [
    ("How do I reset my password?", "Ask a friend.", "Open Settings, then Security, then Reset."),
    ("Where is my parcel?", "Somewhere.", "It left our warehouse today; tracking is by email."),
    ("Can I return a sale item?", "No.", "Yes, within 30 days, with the receipt."),
    ("How do I delete my account?", "You cannot.", "Go to Settings, then Account, then Delete."),
]


@pytest.fixture
def preference_version(project, personas, experts, decide_item, build):
    """A built preference-only version: eight answers corrected by experts (each correction
    makes a pair: the correction chosen, the model's answer rejected)."""
    for n in range(8):
        prompt, bad, good = ANSWERS[n % 4]
        decide_item(
            project,
            [(experts[n % 2], "correct", {"corrected_output": f"{good} (case {n})"})],
            prompt=f"{prompt} (case {n})",
            candidates=[(bad, "support-bot")],
        )
    version = build(project, personas["admin"], kinds=["preference"], eval_fraction=0)
    assert version.status == "succeeded", version.error
    assert version.row_counts["preference"]["train"] == 8 and "sft" not in version.row_counts
    return version


def test_a_dpo_run_on_corrections_trains_and_its_adapter_reloads_and_generates(
    tiny, preference_version, personas, experts, settings
):
    run = training_run_create(
        user=personas["admin"],
        dataset_version=preference_version,
        base_model=tiny,
        method="dpo",
        config={"max_steps": 8, "batch_size": 4},
    )
    assert run.config["learning_rate"] == 2e-3  # the tiny model's DPO defaults

    assert run_execute(run_id=run.pk) == RunStatus.SUCCEEDED

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.step == 8, run.log
    steps = [h for h in run.metrics_history if h["event"] == "step"]
    assert len(steps) == 8 and all("rewards/margins" in h for h in steps)
    adapter = Adapter.objects.get(run=run)
    folder = Path(settings.STORAGE_DIR) / adapter.path
    assert (folder / "adapter_model.safetensors").is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["method"] == "dpo" and manifest["status"] == "completed"
    assert manifest["data"]["train_file"]["name"] == "preference.train.jsonl"
    assert manifest["data"]["train_file"]["rows"] == 8
    lineage = adapter.manifest["lineage"]
    assert lineage["kind"] == "preference" and lineage["decisions"] == 8
    assert {e["username"] for e in lineage["experts"]} == {experts[0].username, experts[1].username}

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = tiny.resolved_reference()
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = PeftModel.from_pretrained(base, folder)
    lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values())  # B starts at zero: trained
    model.eval()
    chat = [{"role": "user", "content": "Where is my parcel?"}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
    if not isinstance(ids, torch.Tensor):  # newer tokenizers answer a BatchEncoding
        ids = ids["input_ids"]
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    assert out.shape[1] > ids.shape[1]
    assert isinstance(tokenizer.decode(out[0, ids.shape[1] :]), str)


def test_sft_on_a_preference_only_version_is_refused_naming_the_dataset(
    tiny, preference_version, personas
):
    with pytest.raises(ValidationError) as exc:
        training_run_create(
            user=personas["admin"],
            dataset_version=preference_version,
            base_model=tiny,
            method="sft",
        )
    assert list(exc.value.message_dict) == ["dataset"]
    assert (
        "sft trains on sft rows and this dataset version has none"
        in (exc.value.message_dict["dataset"][0])
    )
    assert not TrainingRun.objects.exists()


def test_the_api_refuses_dpo_on_an_sft_only_version_under_dataset(
    tiny, sft_version, personas, api_for
):
    response = api_for(personas["admin"]).post(
        "/api/v1/training-runs/",
        {"dataset": sft_version.pk, "base_model": "tiny", "method": "dpo"},
        format="json",
    )
    assert response.status_code == 400
    assert "dpo trains on preference rows" in response.json()["dataset"][0]
    assert not TrainingRun.objects.exists()
