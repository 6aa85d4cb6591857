"""LoRA training on the tiny model: SFT (both row shapes) and DPO learn, leave the base model
alone, save an adapter that reloads and generates, stop when asked, and refuse bad data."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.training.ml.conftest import QA, completion_loss, state_dict_copy, write_jsonl
from training.ml.config import SettingsError
from training.ml.files import sha256_file
from training.ml.train import DatasetError, train

pytestmark = pytest.mark.filterwarnings(
    # peft asks transformers for a renamed attribute; harmless, and not Redline's to fix.
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)


def losses(events, key="loss"):
    return [e[key] for e in events if e["event"] == "step" and key in e]


def mean(values):
    return sum(values) / len(values)


def assert_base_weights_unchanged(peft_model, base_dir):
    from transformers import AutoModelForCausalLM

    original = state_dict_copy(AutoModelForCausalLM.from_pretrained(base_dir))
    trained = {
        name.replace(".base_layer", ""): tensor
        for name, tensor in peft_model.get_base_model().state_dict().items()
        if "lora_" not in name
    }
    assert set(trained) == set(original)
    for name, tensor in original.items():
        assert trained[name].equal(tensor), name


def assert_lora_weights_changed(out_dir):
    from safetensors.torch import load_file

    weights = load_file(out_dir / "adapter_model.safetensors")
    lora_b = {name: t for name, t in weights.items() if "lora_B" in name}
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b.values())  # B starts at zero


def reload_adapter(base_dir, out_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    model = PeftModel.from_pretrained(base, out_dir).eval()
    return model, AutoTokenizer.from_pretrained(out_dir)


@pytest.mark.slow
class TestSftOnPromptCompletionRows:
    def test_loss_decreases(self, sft_run):
        result, events = sft_run
        assert result.status == "completed" and result.global_step == result.total_steps == 30
        train_losses = losses(events)
        assert len(train_losses) == 30
        assert mean(train_losses[-5:]) < mean(train_losses[:5]) - 0.3
        eval_losses = [e["eval_loss"] for e in events if e["event"] == "eval"]
        assert len(eval_losses) == 3 and eval_losses[-1] < eval_losses[0]

    def test_progress_reports_steps_learning_rate_and_throughput(self, sft_run):
        result, events = sft_run
        phases = [e["phase"] for e in events if e["event"] == "phase"]
        assert phases == ["loading", "preparing", "training", "saving"]
        steps = [e for e in events if e["event"] == "step"]
        assert [e["step"] for e in steps] == list(range(1, 31))
        assert all(e["total_steps"] == 30 for e in steps)
        assert all({"loss", "learning_rate", "epoch", "elapsed_s"} <= set(e) for e in steps)
        assert all(e["tokens_per_s"] > 0 for e in steps[1:])
        assert events[-1]["event"] == "end" and events[-1]["status"] == "completed"

    def test_base_weights_are_unchanged_and_lora_weights_changed(self, sft_run, tiny_dir):
        result, _ = sft_run
        assert_base_weights_unchanged(result.model, tiny_dir)
        assert_lora_weights_changed(result.out_dir)
        assert json.loads((tiny_dir / "redline_model.json").read_text())["weights_sha256"][
            "model.safetensors"
        ] == sha256_file(tiny_dir / "model.safetensors")

    def test_saved_adapter_reloads_and_generates(self, sft_run, tiny_dir):
        from transformers import AutoModelForCausalLM

        result, _ = sft_run
        model, tokenizer = reload_adapter(tiny_dir, result.out_dir)
        base = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
        question, answer = QA[0]
        # The reloaded adapter makes the trained answers likelier than the base model does.
        assert completion_loss(model, tokenizer, question, " " + answer) < completion_loss(
            base, tokenizer, question, " " + answer
        )
        inputs = tokenizer([question], return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        assert tokenizer.decode(out[0, inputs.input_ids.shape[1] :], skip_special_tokens=True)

    def test_artifacts_and_manifest(self, sft_run, tiny_dir, data_dir):
        result, events = sft_run
        out = result.out_dir
        names = {p.name for p in out.iterdir()}
        assert {
            "adapter_model.safetensors",
            "adapter_config.json",
            "tokenizer.json",
            "chat_template.jinja",
            "training_config.json",
            "metrics.jsonl",
            "manifest.json",
        } <= names
        assert not [n for n in names if n.startswith(".")]
        assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert lines == [e for e in events if e["event"] in ("step", "eval")]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "completed" and manifest["method"] == "sft"
        assert manifest["loss"] == "completion_only"
        assert manifest["base_model"]["reference"] == str(tiny_dir)
        assert manifest["base_model"]["weights_sha256"]
        assert manifest["data"]["train_file"] == {
            "name": "sft_pc.jsonl",
            "sha256": sha256_file(data_dir / "sft_pc.jsonl"),
            "rows": 32,
        }
        assert manifest["settings"]["max_steps"] == 30 and manifest["settings"]["lora"]["r"] == 8
        assert {"torch", "transformers", "peft", "trl"} <= set(manifest["libraries"])
        assert manifest["device"] == {"device": "cpu", "bf16": False, "precision": "fp32"}
        assert manifest["hardware"]["cpu_count"] >= 1
        assert manifest["steps"] == {"done": 30, "total": 30}
        assert manifest["final_metrics"]["eval_loss"] == result.metrics["eval_loss"]
        assert manifest["dataset_version"] == 7
        assert manifest["started_at"] < manifest["finished_at"]
        config = json.loads((out / "training_config.json").read_text())
        assert config["settings"] == manifest["settings"]
        assert config["peft"]["r"] == 8 and config["trainer_args"]["max_steps"] == 30


@pytest.mark.slow
def test_sft_on_messages_trains_assistant_turns_only(tiny_dir, data_dir, tmp_path):
    events = []
    result = train(
        base_dir=tiny_dir,
        train_file=data_dir / "sft_messages.jsonl",
        method="sft",
        settings={"max_steps": 20, "batch_size": 8},
        out_dir=tmp_path / "adapter",
        on_progress=events.append,
    )
    assert result.status == "completed" and result.manifest["loss"] == "assistant_only"
    train_losses = losses(events)
    assert mean(train_losses[-4:]) < mean(train_losses[:4]) - 0.2
    assert_lora_weights_changed(result.out_dir)


@pytest.mark.slow
def test_a_template_without_generation_markers_trains_the_last_assistant_turn(
    tiny_dir, data_dir, tmp_path
):
    plain = tmp_path / "plain-base"
    shutil.copytree(tiny_dir, plain)
    template = (plain / "chat_template.jinja").read_text()
    template = template.replace("{%- generation %}", "").replace("{% endgeneration %}", "")
    (plain / "chat_template.jinja").write_text(template)
    result = train(
        base_dir=plain,
        train_file=data_dir / "sft_messages.jsonl",
        method="sft",
        settings={"max_steps": 3, "batch_size": 8},
        out_dir=tmp_path / "adapter",
    )
    assert result.status == "completed"
    assert result.manifest["loss"] == "last_turn_completion_only"


@pytest.mark.slow
def test_dpo_improves_reward_margins_and_the_adapter_reloads(tiny_dir, data_dir, tmp_path):
    events = []
    result = train(
        base_dir=tiny_dir,
        train_file=data_dir / "dpo.jsonl",
        method="dpo",
        settings={"max_steps": 30, "batch_size": 8},
        out_dir=tmp_path / "adapter",
        on_progress=events.append,
        keep_model=True,
    )
    assert result.status == "completed" and result.manifest["loss"] == "dpo"
    train_losses, margins = losses(events), losses(events, "rewards/margins")
    assert mean(train_losses[-5:]) < mean(train_losses[:5])
    assert mean(margins[-5:]) > mean(margins[:5]) and margins[-1] > 0
    assert_base_weights_unchanged(result.model, tiny_dir)
    assert_lora_weights_changed(result.out_dir)
    model, tokenizer = reload_adapter(tiny_dir, result.out_dir)
    question, answer = QA[1]
    chosen = completion_loss(model, tokenizer, question, " " + answer)
    rejected = completion_loss(model, tokenizer, question, " No idea, sorry.")
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    base_chosen = completion_loss(base, tokenizer, question, " " + answer)
    base_rejected = completion_loss(base, tokenizer, question, " No idea, sorry.")
    assert chosen - rejected < base_chosen - base_rejected  # chosen became relatively likelier
    inputs = tokenizer([question], return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=4, do_sample=False).shape[1] > 0


@pytest.mark.slow
def test_dpo_on_conversational_rows(tiny_dir, data_dir, tmp_path):
    result = train(
        base_dir=tiny_dir,
        train_file=data_dir / "dpo_chat.jsonl",
        method="dpo",
        settings={"max_steps": 3, "batch_size": 4},
        out_dir=tmp_path / "adapter",
    )
    assert result.status == "completed" and (tmp_path / "adapter" / "manifest.json").is_file()


@pytest.mark.slow
def test_should_stop_ends_the_run_at_the_next_step_as_cancelled(tiny_dir, data_dir, tmp_path):
    events = []
    cancel = []

    def on_progress(event):
        events.append(event)
        if event.get("step") == 3 and event["event"] == "step":
            cancel.append(True)  # the user presses Cancel after seeing step 3

    result = train(
        base_dir=tiny_dir,
        train_file=data_dir / "sft_pc.jsonl",
        method="sft",
        settings={"max_steps": 30, "batch_size": 4},
        out_dir=tmp_path / "adapter",
        on_progress=on_progress,
        should_stop=lambda: bool(cancel),
    )
    assert result.status == "cancelled"
    assert result.global_step == 4 and result.total_steps == 30  # step 4 was running: it ends
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4]
    assert result.out_dir is None and not (tmp_path / "adapter").exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too
    assert events[-1] == {**events[-1], "event": "end", "status": "cancelled", "step": 4}


@pytest.mark.slow
def test_a_cancelled_run_can_keep_its_partial_adapter_clearly_marked(tiny_dir, data_dir, tmp_path):
    result = train(
        base_dir=tiny_dir,
        train_file=data_dir / "sft_pc.jsonl",
        method="sft",
        settings={"max_steps": 30, "batch_size": 4},
        out_dir=tmp_path / "adapter",
        should_stop=lambda: True,  # cancelled before the first step
        keep_partial=True,
    )
    assert result.status == "cancelled" and result.global_step == 0
    manifest = json.loads((tmp_path / "adapter" / "manifest.json").read_text())
    assert manifest["status"] == "cancelled" and manifest["steps"] == {"done": 0, "total": 30}


def test_dpo_on_sft_rows_is_refused_naming_the_missing_columns(tiny_dir, data_dir, tmp_path):
    with pytest.raises(DatasetError) as caught:
        train(
            base_dir=tiny_dir,
            train_file=data_dir / "sft_pc.jsonl",
            method="dpo",
            out_dir=tmp_path / "adapter",
        )
    message = str(caught.value)
    assert "missing chosen, rejected" in message and "train it with sft" in message
    assert not (tmp_path / "adapter").exists()


def test_sft_on_preference_rows_is_refused_with_a_hint(tiny_dir, data_dir, tmp_path):
    with pytest.raises(DatasetError, match=r"sft needs rows with .*train it with dpo"):
        train(
            base_dir=tiny_dir,
            train_file=data_dir / "dpo.jsonl",
            method="sft",
            out_dir=tmp_path / "adapter",
        )


def test_sft_on_unpaired_preference_rows_is_refused(tiny_dir, tmp_path):
    kto = write_jsonl(
        tmp_path / "kto.jsonl", [{"prompt": "Hi", "completion": " Hello", "label": False}]
    )
    with pytest.raises(DatasetError, match="unpaired preferences"):
        train(base_dir=tiny_dir, train_file=kto, method="sft", out_dir=tmp_path / "adapter")


def test_an_empty_or_missing_file_is_refused(tiny_dir, data_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DatasetError, match="(has no rows|could not be read)"):
        train(base_dir=tiny_dir, train_file=empty, method="sft", out_dir=tmp_path / "a")
    with pytest.raises(DatasetError, match="eval file .* does not exist"):
        train(
            base_dir=tiny_dir,
            train_file=data_dir / "sft_pc.jsonl",
            eval_file=tmp_path / "nope.jsonl",
            method="sft",
            out_dir=tmp_path / "a",
        )


def test_bad_settings_and_unknown_target_modules_are_refused(tiny_dir, data_dir, tmp_path):
    with pytest.raises(SettingsError, match=r"^lora\.r: "):
        train(
            base_dir=tiny_dir,
            train_file=data_dir / "sft_pc.jsonl",
            method="sft",
            settings={"lora": {"r": 0}},
            out_dir=tmp_path / "a",
        )
    with pytest.raises(SettingsError, match=r"^lora\.target_modules: .*'c_attn'"):
        train(
            base_dir=tiny_dir,
            train_file=data_dir / "sft_pc.jsonl",
            method="sft",
            settings={"lora": {"target_modules": ["c_attn"]}},
            out_dir=tmp_path / "a",
        )
    assert list(tmp_path.iterdir()) == []
