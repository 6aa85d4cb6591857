"""Generation from a base model, optionally through one of several LoRA adapters.

    generator = Generator("/srv/redline/models/tiny")
    generator.load_adapter("/srv/redline/adapters/42", name="run-42")
    generator.generate(["How do I reset my password?"], adapter="run-42", max_new_tokens=64)
    generator.generate([[{"role": "user", "content": "Hi"}]])       # base model, chat template

The base model is loaded once. Adapters are attached to it with peft under a name and switched
per call (`set_adapter`), so trying several adapters, or an adapter beside its base model
(`adapter=None` runs with the adapters switched off), never reloads the base weights. Not
thread-safe: one Generator serves one worker process, one call at a time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from training.ml.models import BaseModelError, load_base

Chat = list[dict[str, str]]
Prompt = str | Chat

_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Generator:
    def __init__(
        self, base: str | os.PathLike, revision: str | None = None, *, device: str | None = None
    ):
        import torch

        self.base = str(base)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = (
            torch.bfloat16
            if self.device == "cuda" and torch.cuda.is_bf16_supported()
            else torch.float32
        )
        model, tokenizer = load_base(self.base, revision, dtype=dtype)
        tokenizer.padding_side = "left"  # decoder-only: pad on the left so outputs line up
        tokenizer.truncation_side = "left"  # keep the end of an over-long prompt
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.model = model.to(self.device).eval()
        self._peft = None  # PeftModel wrapping self.model once an adapter is loaded
        self.adapters: dict[str, str] = {}  # name -> folder

    # adapters ---------------------------------------------------------------------------------

    def load_adapter(self, path: str | os.PathLike, name: str | None = None) -> str:
        """Attach the adapter saved in `path` under `name` (default: the folder's name)."""
        from peft import PeftModel

        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise BaseModelError(f"{path} is not an adapter folder (no adapter_config.json)")
        name = name or re.sub(r"[^A-Za-z0-9_-]", "-", path.name)[:64]
        if not _ADAPTER_NAME.match(name):
            raise ValueError(f"adapter name {name!r}: use letters, digits, - and _ only")
        if self.adapters.get(name) == str(path):
            return name
        if name in self.adapters:
            self.unload_adapter(name)
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self.model, path, adapter_name=name)
            self._peft.to(self.device).eval()
        else:
            self._peft.load_adapter(path, adapter_name=name)
            self._peft.to(self.device).eval()
        self.adapters[name] = str(path)
        return name

    def unload_adapter(self, name: str) -> None:
        if name not in self.adapters:
            return
        del self.adapters[name]
        if self.adapters:
            if self._peft.active_adapter == name:
                self._peft.set_adapter(next(iter(self.adapters)))
            self._peft.delete_adapter(name)
        else:
            # peft cannot delete the last adapter; drop the wrapper and keep the clean base model.
            self.model = self._peft.unload()
            self._peft = None

    # generation -------------------------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        """The text the model sees: chats through the chat template, strings as they are."""
        if isinstance(prompt, str):
            return prompt
        if not isinstance(prompt, list) or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in prompt
        ):
            raise ValueError("a prompt is a string or a list of {role, content} messages")
        return self.tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True
        )

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        adapter: str | None = None,
        max_new_tokens: int = 128,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int | None = None,
        batch_size: int = 8,
    ) -> list[str]:
        """Generate one completion per prompt (strings or chats); `temperature=0` is greedy.

        With `seed`, sampling is reproducible for the same prompts, batch and settings; the
        global random state is left as it was.
        """
        return [
            text
            for text, _ in self.generate_counted(
                prompts,
                adapter=adapter,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                batch_size=batch_size,
            )
        ]

    def generate_counted(
        self,
        prompts: Sequence[Prompt],
        *,
        adapter: str | None = None,
        max_new_tokens: int = 128,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int | None = None,
        batch_size: int = 8,
        on_step: Callable[[], None] | None = None,
    ) -> list[tuple[str, int]]:
        """`generate`, with the number of new tokens of each completion (up to and including
        its end-of-sequence token; the padding after it is not counted). `on_step` is called
        after every decoding step (e.g. a throttled heartbeat); it cannot stop generation."""
        import torch

        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], dict)):
            raise ValueError("prompts must be a list of prompts (wrap a single prompt in a list)")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
        if adapter is not None and adapter not in self.adapters:
            raise ValueError(f"no adapter named {adapter!r} is loaded")
        texts = [self.render(p) for p in prompts]
        model = self._peft if self._peft is not None else self.model
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p}
            if temperature > 0
            else {"do_sample": False}
        )
        limit = getattr(self.model.config, "max_position_embeddings", None) or 2048
        outputs: list[tuple[str, int]] = []
        extra: dict[str, Any] = {}
        if on_step is not None:
            extra["stopping_criteria"] = _step_callbacks(on_step)
        devices = [torch.cuda.current_device()] if self.device == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(texts), batch_size):
                batch = texts[start : start + batch_size]
                encoded = self.tokenizer(
                    batch,
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=max(8, limit - max_new_tokens),
                    add_special_tokens=False,
                ).to(self.device)
                with torch.inference_mode(), self._adapter_context(adapter):
                    generated = model.generate(
                        **encoded,
                        max_new_tokens=max_new_tokens,
                        pad_token_id=self.tokenizer.pad_token_id,
                        eos_token_id=self.tokenizer.eos_token_id,
                        **extra,
                        **sampling,
                    )
                new_tokens = generated[:, encoded["input_ids"].shape[1] :]
                texts_out = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                outputs.extend(
                    (text.strip(), count)
                    for text, count in zip(texts_out, self._counts(new_tokens), strict=True)
                )
        return outputs

    def _counts(self, new_tokens) -> list[int]:
        """Generated tokens per row: up to the first end-of-sequence token, inclusive."""
        eos = self.tokenizer.eos_token_id
        counts = []
        for row in new_tokens.tolist():
            counts.append(row.index(eos) + 1 if eos is not None and eos in row else len(row))
        return counts

    def _adapter_context(self, adapter: str | None):
        import contextlib

        if self._peft is None:
            return contextlib.nullcontext()
        if adapter is None:
            return self._peft.disable_adapter()
        self._peft.set_adapter(adapter)
        return contextlib.nullcontext()


def _step_callbacks(on_step: Callable[[], None]):
    """A transformers stopping criterion that never stops: it calls `on_step` each step."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Each(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            on_step()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Each()])
