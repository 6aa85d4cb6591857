"""LoRA training: SFT with trl's SFTTrainer, DPO with trl's DPOTrainer.

`train()` is the one entry point. It is plain library code: the Celery task owns the run row,
turns `on_progress` events into heartbeats and progress rows, and answers `should_stop` from the
run's cancel flag. Everything is written to a temporary folder beside `out_dir` and moved into
place at the end, so `out_dir` either does not exist or holds a complete adapter:

    out_dir/
      adapter_model.safetensors, adapter_config.json   (PeftModel.from_pretrained(base, out_dir))
      tokenizer files + chat_template.jinja             (the tokenizer and template trained with)
      training_config.json                              (resolved settings and trainer arguments)
      metrics.jsonl                                     (one line per logged step / evaluation)
      manifest.json                                     (lineage, versions, hardware, metrics)

Loss masking. SFT rows are either `{"prompt", "completion"}` (strings or message lists): loss
on the completion only (trl's completion_only_loss); or `{"messages": [...]}`: loss on every
assistant turn (trl's assistant_only_loss), which needs `{% generation %}` markers in the chat
template (both built-in base models have them). For a base model whose template lacks them,
each conversation becomes a conversational prompt/completion row (the last assistant turn is the
completion), so the loss still covers only what the assistant said, in that last turn.
DPO rows are `{"prompt", "chosen", "rejected"}`, strings or message lists; the reference model
is the base model with the adapter switched off (no second copy in memory).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.ml.chat_template import has_generation_markers
from training.ml.config import SettingsError, TrainSettings, defaults_for, validate_target_modules
from training.ml.files import publish_dir, sha256_file, temp_dir_beside
from training.ml.models import check_reference, load_base, model_info

SFT_SHAPES = ({"messages"}, {"prompt", "completion"})
DPO_COLUMNS = {"prompt", "chosen", "rejected"}
LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")

ProgressCallback = Callable[[dict[str, Any]], None]
StopCallback = Callable[[], bool]


class DatasetError(ValueError):
    """A training or eval file that does not fit the method (missing columns, no rows, bad rows)."""


@dataclass
class TrainResult:
    status: str  # "completed" or "cancelled"
    out_dir: Path | None  # None when a cancelled run's partial adapter was discarded
    global_step: int
    total_steps: int
    metrics: dict[str, Any]
    manifest: dict[str, Any]
    model: Any = field(default=None, repr=False)  # the trained PeftModel, only with keep_model=True


def train(
    *,
    base_dir: str | os.PathLike,
    train_file: str | os.PathLike,
    eval_file: str | os.PathLike | None = None,
    method: str,
    settings: TrainSettings | dict[str, Any] | None = None,
    out_dir: str | os.PathLike,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCallback | None = None,
    base_revision: str | None = None,
    manifest_extra: dict[str, Any] | None = None,
    keep_partial: bool = False,
    keep_model: bool = False,
) -> TrainResult:
    """Train a LoRA adapter on `base_dir` (a local model folder or a hub id) and publish it to `out_dir`.

    - `settings`: a TrainSettings, a dict of overrides on `defaults_for(method, size)`, or None.
    - `on_progress(event)`: called with a dict for each phase change, each logged step and each
      evaluation (see `docs/training.md`); exceptions from it propagate and fail the run.
    - `should_stop()`: asked after every optimizer step (keep it cheap); when it returns True the
      run stops after that step with status "cancelled". A cancelled run's adapter is discarded
      unless `keep_partial`, in which case it is published with `"status": "cancelled"` in its
      manifest.
    - `manifest_extra`: merged into manifest.json (dataset version id, code version, run id…).

    Raises SettingsError (bad settings or target modules), DatasetError (files that do not fit
    the method), BaseModelError (base model missing or unreachable). On any error nothing is
    left behind.
    """
    started = datetime.now(UTC)
    emit = on_progress or (lambda event: None)
    stop = should_stop or (lambda: False)
    out_dir = Path(out_dir)
    reference = check_reference(str(base_dir))
    info = model_info(reference)
    settings = _resolve_settings(method, settings, info.get("parameters"))
    train_file = Path(train_file)
    eval_file = Path(eval_file) if eval_file is not None else None
    for label, path in (("train file", train_file), ("eval file", eval_file)):
        if path is not None and not path.is_file():
            raise DatasetError(f"{label} {path} does not exist")

    tmp = temp_dir_beside(out_dir)
    try:
        return _train_in(
            tmp,
            reference=reference,
            revision=base_revision,
            info=info,
            train_file=train_file,
            eval_file=eval_file,
            settings=settings,
            out_dir=out_dir,
            emit=emit,
            stop=stop,
            started=started,
            manifest_extra=manifest_extra or {},
            keep_partial=keep_partial,
            keep_model=keep_model,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _resolve_settings(method, settings, n_params) -> TrainSettings:
    defaults = defaults_for(method, n_params)
    if settings is None:
        return defaults
    if isinstance(settings, dict):
        if settings.get("method", method) != method:
            raise SettingsError(
                "method", f"the config says {settings['method']!r}, the run is {method!r}"
            )
        return TrainSettings.from_dict({**settings, "method": method}, defaults=defaults)
    if not isinstance(settings, TrainSettings):
        raise SettingsError(
            "config", f"must be TrainSettings or a dict, got {type(settings).__name__}"
        )
    if settings.method != method:
        raise SettingsError(
            "method", f"settings are for {settings.method!r}, the run is {method!r}"
        )
    return settings


def choose_device(precision: str = "auto") -> dict[str, Any]:
    """CUDA with bf16 where supported, else CPU fp32. `precision` may force fp32 or bf16."""
    import torch

    cuda = torch.cuda.is_available()
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if precision == "bf16" and not (bf16_ok or not cuda):
        raise SettingsError("precision", "bf16 was requested but this GPU does not support it")
    bf16 = precision == "bf16" or (precision == "auto" and bf16_ok)
    return {
        "device": "cuda" if cuda else "cpu",
        "bf16": bf16,
        "precision": "bf16" if bf16 else "fp32",
    }


def hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda_version=torch.version.cuda,
        )
    return info


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in (*LIBRARIES, "redline"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# --------------------------------------------------------------------------------------------
# datasets


def load_rows(path: Path, cache_dir: Path, *, label: str):
    """A `datasets.Dataset` from a JSONL file (trl's column names), cached inside `cache_dir`."""
    from datasets import load_dataset

    try:
        dataset = load_dataset(
            "json", data_files=str(path), split="train", cache_dir=str(cache_dir)
        )
    except Exception as exc:  # arrow/json errors: mixed types, bad JSON
        raise DatasetError(f"{label} {path.name} could not be read as JSONL: {exc}") from exc
    if len(dataset) == 0:
        raise DatasetError(f"{label} {path.name} has no rows")
    return dataset


def check_columns(dataset, method: str, *, label: str) -> str:
    """Return the row shape ("messages", "prompt_completion" or "preference") or raise DatasetError."""
    columns = set(dataset.column_names)
    found = ", ".join(sorted(columns)) or "none"
    if method == "sft":
        if "label" in columns:
            raise DatasetError(
                f'{label}: rows with a "label" column are unpaired preferences (KTO), which '
                "sft would train on good and bad completions alike; found columns " + found
            )
        if {"messages"} <= columns:
            return "messages"
        if {"prompt", "completion"} <= columns:
            return "prompt_completion"
        hint = " (a preference dataset: train it with dpo)" if columns >= DPO_COLUMNS else ""
        raise DatasetError(
            f'{label}: sft needs rows with "messages", or "prompt" and "completion"; '
            f"found columns {found}{hint}"
        )
    missing = sorted(DPO_COLUMNS - columns)
    if missing:
        hint = (
            " (an SFT dataset: train it with sft)"
            if "messages" in columns or "completion" in columns
            else ""
        )
        raise DatasetError(
            f'{label}: dpo needs rows with "prompt", "chosen" and "rejected"; missing '
            f"{', '.join(missing)}; found columns {found}{hint}"
        )
    return "preference"


def _last_turn_as_completion(dataset, *, label: str):
    """messages rows → conversational prompt/completion, the last assistant turn as completion."""

    def split(row):
        messages = row["messages"]
        if not messages or messages[-1].get("role") != "assistant":
            raise DatasetError(f"{label}: every conversation must end with an assistant turn")
        return {"prompt": messages[:-1], "completion": [messages[-1]]}

    return dataset.map(split, remove_columns=dataset.column_names)


# --------------------------------------------------------------------------------------------
# training


def _make_callback(*, emit, stop, metrics_file, total_tokens_key="num_tokens"):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Reports each logged step and evaluation; stops after the step where should_stop() holds."""

        def __init__(self):
            self.cancelled = False
            self.started = None
            # (time, cumulative tokens) of recent logs: tokens/s over a window, not one noisy step.
            self.window: deque[tuple[float, int]] = deque(maxlen=11)
            self.total_steps = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            self.window.append((self.started, 0))
            self.total_steps = state.max_steps
            emit({"event": "phase", "phase": "training", "step": 0, "total_steps": state.max_steps})

        def on_step_end(self, args, state, control, **kwargs):
            if not self.cancelled and stop():
                self.cancelled = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            if "train_runtime" in logs:  # the end-of-training summary, kept for the manifest
                return
            now = time.perf_counter()
            elapsed = now - (self.started or now)
            is_eval = any(k.startswith("eval_") for k in logs)
            record: dict[str, Any] = {
                "event": "eval" if is_eval else "step",
                "step": state.global_step,
                "total_steps": state.max_steps,
                "epoch": round(state.epoch or 0.0, 4),
                "elapsed_s": round(elapsed, 6),
            }
            if not is_eval:
                tokens = int(logs.get(total_tokens_key) or 0)
                if tokens:
                    self.window.append((now, tokens))
                    (t0, n0), (t1, n1) = self.window[0], self.window[-1]
                    record["tokens"] = tokens
                    if t1 > t0:
                        record["tokens_per_s"] = round((n1 - n0) / (t1 - t0), 1)
                if state.global_step:
                    rate = elapsed / state.global_step
                    record["eta_s"] = round(rate * (state.max_steps - state.global_step), 1)
            for key, value in logs.items():
                if key in record or key == total_tokens_key or key == "epoch":
                    continue
                if isinstance(value, (int, float)):
                    record[key] = value
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            emit(record)

    return ProgressCallback()


def _train_in(
    tmp: Path,
    *,
    reference,
    revision,
    info,
    train_file,
    eval_file,
    settings: TrainSettings,
    out_dir,
    emit,
    stop,
    started,
    manifest_extra,
    keep_partial,
    keep_model,
) -> TrainResult:
    import torch
    from peft import LoraConfig
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        import datasets

        datasets.disable_progress_bars()
    except Exception:  # noqa: S110 - progress bars are cosmetic
        pass

    method = settings.method
    cache = tmp / ".cache"
    emit({"event": "phase", "phase": "loading"})
    train_rows = load_rows(train_file, cache, label="train file")
    shape = check_columns(train_rows, method, label="train file")
    eval_rows = None
    if eval_file is not None:
        eval_rows = load_rows(eval_file, cache, label="eval file")
        eval_shape = check_columns(eval_rows, method, label="eval file")
        if eval_shape != shape:
            raise DatasetError(f"eval file rows are {eval_shape}, train file rows are {shape}")

    device = choose_device(settings.precision)
    model, tokenizer = load_base(reference, revision)
    validate_target_modules(settings.lora, model)
    n_params = sum(p.numel() for p in model.parameters())

    loss_mode = {"preference": "dpo", "prompt_completion": "completion_only"}.get(shape)
    if shape == "messages":
        if has_generation_markers(tokenizer.chat_template):
            loss_mode = "assistant_only"
        else:
            loss_mode = "last_turn_completion_only"
            train_rows = _last_turn_as_completion(train_rows, label="train file")
            if eval_rows is not None:
                eval_rows = _last_turn_as_completion(eval_rows, label="eval file")

    peft_config = LoraConfig(
        r=settings.lora.r,
        lora_alpha=settings.lora.alpha,
        lora_dropout=settings.lora.dropout,
        target_modules=settings.lora.peft_target_modules(),
        bias="none",
        task_type="CAUSAL_LM",
    )
    common = {
        "output_dir": str(tmp / ".trainer"),
        "per_device_train_batch_size": settings.batch_size,
        "per_device_eval_batch_size": settings.batch_size,
        "gradient_accumulation_steps": settings.grad_accumulation,
        "learning_rate": settings.learning_rate,
        "num_train_epochs": settings.num_epochs,
        "max_steps": settings.max_steps or -1,
        "lr_scheduler_type": settings.lr_scheduler,
        "warmup_steps": settings.warmup_ratio,
        "weight_decay": settings.weight_decay,
        "max_grad_norm": settings.max_grad_norm,
        "logging_strategy": "steps",
        "logging_steps": settings.logging_steps,
        "eval_strategy": ("steps" if settings.eval_steps else "epoch") if eval_rows else "no",
        "eval_steps": settings.eval_steps,
        "save_strategy": "no",
        "report_to": "none",
        "seed": settings.seed,
        "data_seed": settings.seed,
        "bf16": device["bf16"],
        "fp16": False,
        "use_cpu": device["device"] == "cpu",
        _checkpointing_argument(): settings.gradient_checkpointing,
        "max_length": settings.max_length,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": device["device"] == "cuda",
    }
    metrics_path = tmp / "metrics.jsonl"
    with open(metrics_path, "w", encoding="utf-8") as metrics_file:
        callback = _make_callback(emit=emit, stop=stop, metrics_file=metrics_file)
        emit({"event": "phase", "phase": "preparing"})
        if method == "sft":
            from trl import SFTConfig

            SFTTrainer = _sft_trainer_class(fused_loss=device["device"] == "cuda")
            args = SFTConfig(
                **common,
                completion_only_loss=True
                if shape == "prompt_completion" or loss_mode.startswith("last_turn")
                else None,
                assistant_only_loss=loss_mode == "assistant_only",
                packing=False,
            )
            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=train_rows,
                eval_dataset=eval_rows,
                processing_class=tokenizer,
                peft_config=peft_config,
                callbacks=[callback],
            )
        else:
            from trl import DPOConfig

            DPOTrainer = _dpo_trainer_class()
            args = DPOConfig(**common, beta=settings.beta)
            trainer = DPOTrainer(
                model=model,
                args=args,
                train_dataset=train_rows,
                eval_dataset=eval_rows,
                processing_class=tokenizer,
                peft_config=peft_config,
                callbacks=[callback],
            )
        # The Trainer prints every log dict to stdout when tqdm is off; progress goes to on_progress.
        trainer.remove_callback(PrinterCallback)
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        if stop():
            callback.cancelled = True
            summary: dict[str, Any] = {}
        else:
            summary = dict(trainer.train().metrics)
    state = trainer.state
    if not state.max_steps:  # cancelled before training began: report the plan
        state.max_steps = _planned_steps(settings, len(train_rows))
    status = "cancelled" if callback.cancelled else "completed"
    final = _final_metrics(summary, metrics_path)

    peft_model = trainer.model
    result_dir: Path | None = None
    manifest = {
        "status": status,
        "method": method,
        "loss": loss_mode,
        "base_model": {
            "reference": reference,
            "revision": revision,
            "parameters": n_params,
            **{k: v for k, v in info.items() if k in ("name", "source", "weights_sha256")},
        },
        "data": {
            "train_file": {
                "name": train_file.name,
                "sha256": sha256_file(train_file),
                "rows": len(train_rows),
            },
            **(
                {
                    "eval_file": {
                        "name": eval_file.name,
                        "sha256": sha256_file(eval_file),
                        "rows": len(eval_rows),
                    }
                }
                if eval_file is not None
                else {}
            ),
        },
        "settings": settings.to_dict(),
        "trainable_parameters": trainable,
        "steps": {"done": state.global_step, "total": state.max_steps},
        "device": device,
        "hardware": hardware(),
        "libraries": library_versions(),
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "final_metrics": final,
        **manifest_extra,
    }
    if status == "completed" or keep_partial:
        emit({"event": "phase", "phase": "saving"})
        shutil.rmtree(tmp / ".trainer", ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        peft_model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        resolved = {
            "settings": settings.to_dict(),
            "loss": loss_mode,
            "peft": json.loads(json.dumps(peft_config.to_dict(), default=str)),
            "trainer_args": json.loads(json.dumps(args.to_dict(), default=str)),
        }
        (tmp / "training_config.json").write_text(
            json.dumps(resolved, indent=2, sort_keys=True) + "\n"
        )
        (tmp / "manifest.json").write_text(
            json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
        )
        publish_dir(tmp, out_dir)
        result_dir = out_dir
    emit(
        {
            "event": "end",
            "status": status,
            "step": state.global_step,
            "total_steps": state.max_steps,
            **final,
        }
    )
    if not keep_model:
        del trainer, peft_model, model
        peft_model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return TrainResult(
        status=status,
        out_dir=result_dir,
        global_step=state.global_step,
        total_steps=state.max_steps,
        metrics=final,
        manifest=manifest,
        model=peft_model,
    )


def _trainer_mixin():
    class CachedFlosMixin:
        """Trainer estimates FLOPs on every step by recounting all the model's parameters (about
        a millisecond a step in Python, a tenth of a tiny model's step); count them once."""

        _redline_n_params = None

        def floating_point_ops(self, inputs):
            main_input = getattr(self.model, "main_input_name", "input_ids")
            if main_input not in inputs or not hasattr(self.model, "num_parameters"):
                return 0
            if self._redline_n_params is None:
                self._redline_n_params = self.model.num_parameters(exclude_embeddings=True)
            return 6 * inputs[main_input].numel() * self._redline_n_params

    return CachedFlosMixin


def _dpo_trainer_class():
    from trl import DPOTrainer

    class RedlineDPOTrainer(_trainer_mixin(), DPOTrainer):
        pass

    return RedlineDPOTrainer


def _sft_trainer_class(*, fused_loss: bool):
    """trl's SFTTrainer, with the plain cross-entropy loss off the GPU.

    trl computes the SFT loss with a fused, tiled LM head that never builds the full logits:
    on CUDA it scores only the completion tokens (Triton) and saves memory, but its pure-torch
    fallback on CPU scores every position tile by tile and made CPU steps 10-100% slower than
    the model's own loss in bench/train_bench.py. The loss is the same (mean NLL over the
    completion tokens), so on CPU the model computes it; trl's entropy and token-accuracy
    metrics are then not logged. Tokens are counted here in both cases.
    """
    from transformers import Trainer
    from trl import SFTTrainer

    class RedlineSFTTrainer(_trainer_mixin(), SFTTrainer):
        redline_tokens = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.model.training and "attention_mask" in inputs:
                self.redline_tokens += int(inputs["attention_mask"].sum())
            if fused_loss:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            return Trainer.compute_loss(
                self,
                model,
                inputs,
                return_outputs=return_outputs,
                num_items_in_batch=num_items_in_batch,
            )

        def log(self, logs, start_time=None):
            if "loss" in logs and "eval_loss" not in logs:
                logs["num_tokens"] = self.redline_tokens
            super().log(logs, start_time)

    return RedlineSFTTrainer


def _planned_steps(settings: TrainSettings, n_rows: int) -> int:
    # The Trainer's own arithmetic (single process, no dropped last batch).
    if settings.max_steps:
        return settings.max_steps
    batches = math.ceil(n_rows / settings.batch_size)
    per_epoch = max(1, math.ceil(batches / settings.grad_accumulation))
    return math.ceil(settings.num_epochs * per_epoch)


def _checkpointing_argument() -> str:
    # transformers 5 renamed gradient_checkpointing (now a deprecated alias that warns).
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )


def _final_metrics(summary: dict[str, Any], metrics_path: Path) -> dict[str, Any]:
    final: dict[str, Any] = {}
    for key in (
        "train_loss",
        "train_runtime",
        "train_steps_per_second",
        "train_samples_per_second",
    ):
        if key in summary:
            final[key] = summary[key]
    last_step, last_eval = {}, {}
    with open(metrics_path, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            if record["event"] == "eval":
                last_eval = record
            else:
                last_step = record
    if "loss" in last_step:
        final["last_loss"] = last_step["loss"]
    if "tokens" in last_step:
        final["tokens"] = last_step["tokens"]
    for key, value in last_eval.items():
        if key.startswith("eval_"):
            final[key] = value
    for key in ("rewards/margins", "rewards/accuracies"):
        if key in last_step:
            final[key] = last_step[key]
    return final
