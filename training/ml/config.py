"""Training settings: validated dataclasses, defaults per method and model size.

Standard library only (the web process builds forms and validates API input with them). Every
error is a `SettingsError` (a `ValueError`) whose `field` names the bad setting, dotted for the
nested LoRA settings (`lora.r`), and whose message starts with it.

    settings = TrainSettings.from_dict({"learning_rate": 1e-4}, defaults=defaults_for("sft", n))
    settings.to_dict()          # JSON-ready, round-trips through from_dict
    describe_settings()         # names, types, defaults and help for forms and docs
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

METHODS = ("sft", "dpo")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
PRECISIONS = ("auto", "fp32", "bf16")
ALL_LINEAR = "all-linear"

# Model-size buckets for defaults, by parameter count.
TINY_MAX_PARAMS = 50_000_000
SMALL_MAX_PARAMS = 1_000_000_000


class SettingsError(ValueError):
    """A bad training setting; `field` is its (dotted) name."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise SettingsError(name, message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _refuse_unknown(cls, data: dict[str, Any], *, prefix: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        names = ", ".join(prefix + k for k in unknown)
        raise SettingsError(
            prefix + unknown[0],
            f"unknown setting{'s' if len(unknown) > 1 else ''} {names}; known: "
            + ", ".join(prefix + k for k in sorted(known)),
        )


@dataclass
class LoraSettings:
    r: int = field(default=8, metadata={"help": "LoRA rank: size of the low-rank update matrices."})
    alpha: int = field(
        default=16,
        metadata={"help": "LoRA scaling (lora_alpha); the update is scaled by alpha / r."},
    )
    dropout: float = field(
        default=0.05, metadata={"help": "Dropout on the LoRA input, between 0 and 1 (exclusive)."}
    )
    target_modules: list[str] = field(
        default_factory=lambda: [ALL_LINEAR],
        metadata={
            "help": "Names of the modules that get LoRA weights (e.g. q_proj, v_proj), or "
            f"['{ALL_LINEAR}'] for every linear layer except the output head."
        },
    )

    def __post_init__(self) -> None:
        _check(
            _is_int(self.r) and self.r > 0, "lora.r", f"must be a positive integer, got {self.r!r}"
        )
        _check(self.r <= 1024, "lora.r", f"must be at most 1024, got {self.r}")
        _check(
            _is_number(self.alpha) and self.alpha > 0,
            "lora.alpha",
            f"must be a positive number, got {self.alpha!r}",
        )
        _check(
            _is_number(self.dropout) and 0 <= self.dropout < 1,
            "lora.dropout",
            f"must be at least 0 and below 1, got {self.dropout!r}",
        )
        modules = self.target_modules
        if isinstance(modules, str):
            modules = [m.strip() for m in modules.split(",") if m.strip()]
        _check(
            isinstance(modules, (list, tuple))
            and len(modules) > 0
            and all(isinstance(m, str) and m.strip() for m in modules),
            "lora.target_modules",
            f"must be a non-empty list of module names, got {self.target_modules!r}",
        )
        modules = list(dict.fromkeys(m.strip() for m in modules))
        _check(
            ALL_LINEAR not in modules or len(modules) == 1,
            "lora.target_modules",
            f"'{ALL_LINEAR}' cannot be combined with module names",
        )
        self.target_modules = modules

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraSettings:
        _check(isinstance(data, dict), "lora", f"must be an object, got {data!r}")
        _refuse_unknown(cls, data, prefix="lora.")
        return cls(**data)

    def peft_target_modules(self) -> str | list[str]:
        return ALL_LINEAR if self.target_modules == [ALL_LINEAR] else list(self.target_modules)


@dataclass
class TrainSettings:
    method: str = field(
        default="sft",
        metadata={"help": "sft: supervised fine-tuning on completions; dpo: preference pairs."},
    )
    learning_rate: float = field(
        default=2e-4, metadata={"help": "Peak learning rate of AdamW (LoRA weights only)."}
    )
    num_epochs: float = field(
        default=3.0,
        metadata={"help": "Passes over the training file; ignored when max_steps is set."},
    )
    max_steps: int | None = field(
        default=None,
        metadata={"help": "Stop after this many optimizer steps (overrides num_epochs)."},
    )
    batch_size: int = field(default=8, metadata={"help": "Rows per forward pass."})
    grad_accumulation: int = field(
        default=1,
        metadata={
            "help": "Forward passes per optimizer step (effective batch = batch_size × this)."
        },
    )
    max_length: int = field(
        default=512,
        metadata={"help": "Longest tokenized row; longer rows are truncated at the end."},
    )
    seed: int = field(default=42, metadata={"help": "Seed for LoRA initialisation and shuffling."})
    eval_steps: int | None = field(
        default=None,
        metadata={
            "help": "Evaluate on the eval file every N steps; when empty, at the end of each epoch."
        },
    )
    logging_steps: int = field(
        default=1, metadata={"help": "Record loss and learning rate every N steps."}
    )
    warmup_ratio: float = field(
        default=0.03, metadata={"help": "Fraction of the steps spent warming up the learning rate."}
    )
    lr_scheduler: str = field(
        default="linear", metadata={"help": f"Learning-rate schedule: {', '.join(SCHEDULERS)}."}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    beta: float = field(
        default=0.1,
        metadata={
            "help": "DPO only: how far the policy may move from the base model (higher = less)."
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in the backward pass: less memory, ~20% slower."},
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "auto: bf16 mixed precision on a GPU that supports it, else fp32; or force "
            "fp32 / bf16."
        },
    )
    lora: LoraSettings = field(
        default_factory=LoraSettings, metadata={"help": "LoRA adapter settings."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            self.lora = LoraSettings.from_dict(self.lora)
        _check(
            self.method in METHODS,
            "method",
            f"must be one of {', '.join(METHODS)}, got {self.method!r}",
        )
        _check(
            _is_number(self.learning_rate) and 0 < self.learning_rate < 1,
            "learning_rate",
            f"must be a number above 0 and below 1, got {self.learning_rate!r}",
        )
        _check(
            _is_number(self.num_epochs) and 0 < self.num_epochs <= 1000,
            "num_epochs",
            f"must be above 0 and at most 1000, got {self.num_epochs!r}",
        )
        _check(
            self.max_steps is None or (_is_int(self.max_steps) and self.max_steps > 0),
            "max_steps",
            f"must be a positive integer or empty, got {self.max_steps!r}",
        )
        for name in ("batch_size", "grad_accumulation", "logging_steps"):
            value = getattr(self, name)
            _check(_is_int(value) and value > 0, name, f"must be a positive integer, got {value!r}")
        _check(
            _is_int(self.max_length) and 16 <= self.max_length <= 131072,
            "max_length",
            f"must be an integer from 16 to 131072, got {self.max_length!r}",
        )
        _check(
            _is_int(self.seed) and 0 <= self.seed < 2**32,
            "seed",
            f"must be an integer from 0 to 2**32 - 1, got {self.seed!r}",
        )
        _check(
            self.eval_steps is None or (_is_int(self.eval_steps) and self.eval_steps > 0),
            "eval_steps",
            f"must be a positive integer or empty, got {self.eval_steps!r}",
        )
        _check(
            _is_number(self.warmup_ratio) and 0 <= self.warmup_ratio < 1,
            "warmup_ratio",
            f"must be at least 0 and below 1, got {self.warmup_ratio!r}",
        )
        _check(
            self.lr_scheduler in SCHEDULERS,
            "lr_scheduler",
            f"must be one of {', '.join(SCHEDULERS)}, got {self.lr_scheduler!r}",
        )
        _check(
            _is_number(self.weight_decay) and 0 <= self.weight_decay < 1,
            "weight_decay",
            f"must be at least 0 and below 1, got {self.weight_decay!r}",
        )
        _check(
            _is_number(self.max_grad_norm) and self.max_grad_norm > 0,
            "max_grad_norm",
            f"must be a positive number, got {self.max_grad_norm!r}",
        )
        _check(
            _is_number(self.beta) and self.beta > 0,
            "beta",
            f"must be a positive number, got {self.beta!r}",
        )
        _check(
            isinstance(self.gradient_checkpointing, bool),
            "gradient_checkpointing",
            f"must be true or false, got {self.gradient_checkpointing!r}",
        )
        _check(
            self.precision in PRECISIONS,
            "precision",
            f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
        )
        _check(isinstance(self.lora, LoraSettings), "lora", f"must be an object, got {self.lora!r}")
        self.learning_rate = float(self.learning_rate)
        self.num_epochs = float(self.num_epochs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, defaults: TrainSettings | None = None
    ) -> TrainSettings:
        """Settings from a JSON object; missing keys come from `defaults` (or the class defaults).

        Unknown keys are refused, naming them: a typo must not silently train with a default.
        """
        _check(isinstance(data, dict), "config", f"must be an object, got {type(data).__name__}")
        _refuse_unknown(cls, data, prefix="")
        base = defaults.to_dict() if defaults is not None else {}
        merged = {**base, **{k: v for k, v in data.items() if k != "lora"}}
        lora = dict(base.get("lora") or {})
        if "lora" in data:
            _check(
                isinstance(data["lora"], dict), "lora", f"must be an object, got {data['lora']!r}"
            )
            _refuse_unknown(LoraSettings, data["lora"], prefix="lora.")
            lora.update(data["lora"])
        merged["lora"] = LoraSettings(**lora)
        return cls(**merged)


def size_class(n_params: int | None) -> str:
    if n_params is None or n_params >= SMALL_MAX_PARAMS:
        return "large"
    return "tiny" if n_params < TINY_MAX_PARAMS else "small"


# Per (method, size class). Tiny models start from random weights and a tiny vocabulary: they
# need a high learning rate to show learning in a few dozen steps. Small and large ones follow
# the usual LoRA recipes (SFT around 1e-4..2e-4, DPO one to two orders of magnitude lower).
_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("sft", "tiny"): {"learning_rate": 3e-3, "num_epochs": 3.0, "batch_size": 8, "max_length": 256,
                      "lora": {"r": 8, "alpha": 16}},
    ("dpo", "tiny"): {"learning_rate": 2e-3, "num_epochs": 3.0, "batch_size": 8, "max_length": 256,
                      "beta": 0.1, "lora": {"r": 8, "alpha": 16}},
    ("sft", "small"): {"learning_rate": 2e-4, "num_epochs": 2.0, "batch_size": 4,
                       "grad_accumulation": 4, "max_length": 1024, "lora": {"r": 16, "alpha": 32}},
    ("dpo", "small"): {"learning_rate": 2e-5, "num_epochs": 1.0, "batch_size": 2,
                       "grad_accumulation": 8, "max_length": 1024, "beta": 0.1,
                       "lora": {"r": 16, "alpha": 32}},
    ("sft", "large"): {"learning_rate": 1e-4, "num_epochs": 2.0, "batch_size": 2,
                       "grad_accumulation": 8, "max_length": 2048, "gradient_checkpointing": True,
                       "lora": {"r": 16, "alpha": 32}},
    ("dpo", "large"): {"learning_rate": 5e-6, "num_epochs": 1.0, "batch_size": 1,
                       "grad_accumulation": 16, "max_length": 2048, "beta": 0.1,
                       "gradient_checkpointing": True, "lora": {"r": 16, "alpha": 32}},
}  # fmt: skip


def defaults_for(method: str, n_params: int | None) -> TrainSettings:
    """Sensible settings for `method` on a base model of `n_params` parameters (None: unknown)."""
    _check(method in METHODS, "method", f"must be one of {', '.join(METHODS)}, got {method!r}")
    values = dict(_DEFAULTS[(method, size_class(n_params))])
    lora = LoraSettings(**values.pop("lora"))
    return TrainSettings(method=method, lora=lora, **values)


def validate_target_modules(lora: LoraSettings, model) -> list[str]:
    """Check that every target module name exists in `model` as a layer LoRA can wrap.

    Returns the matched module paths. A name matches a module whose dotted path equals it or ends
    with `.name` (peft's rule). Raises SettingsError naming the first unknown module and listing
    the names that would work.
    """
    wrappable: list[tuple[str, str]] = []  # (path, layer class name)
    for path, module in model.named_modules():
        kind = type(module).__name__
        if path and kind in {"Linear", "Embedding", "Conv1D", "Conv1d", "Conv2d"}:
            wrappable.append((path, kind))
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    output_paths = {p for p, m in model.named_modules() if output is not None and m is output}
    if lora.target_modules == [ALL_LINEAR]:  # peft's rule: linear layers but the output head
        return [
            p for p, kind in wrappable if kind in {"Linear", "Conv1D"} and p not in output_paths
        ]
    suggestions = ", ".join(
        sorted({p.rsplit(".", 1)[-1] for p, _ in wrappable if p not in output_paths})
    )
    all_paths = [p for p, _ in wrappable]
    matched: list[str] = []
    for name in lora.target_modules:
        found = [p for p in all_paths if p == name or p.endswith("." + name)]
        if not found:
            raise SettingsError(
                "lora.target_modules",
                f"the model has no module named {name!r}; modules LoRA can target: {suggestions}",
            )
        matched.extend(found)
    return matched


def describe_settings() -> list[dict[str, Any]]:
    """Each setting's dotted name, type, class default and help text (for forms and docs)."""
    rows = []
    for cls, prefix in ((TrainSettings, ""), (LoraSettings, "lora.")):
        instance = cls()
        for f in dataclasses.fields(cls):
            if f.name == "lora":
                continue
            rows.append(
                {
                    "name": prefix + f.name,
                    "type": str(f.type),
                    "default": getattr(instance, f.name),
                    "help": f.metadata.get("help", ""),
                }
            )
    return rows
