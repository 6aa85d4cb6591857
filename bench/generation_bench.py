"""Generation throughput: a Redline generation job against a plain `model.generate` loop.

    python bench/generation_bench.py [--models tiny,smollm2] [--prompts 32] [--batch 16]
                                     [--tiny-tokens 64] [--smollm2-tokens 48] [--threads N]

Both sides answer the same chat prompts (customer questions from
training/ml/data/support_qa.txt) with the same base model and the same greedy decoding
(`max_new_tokens`, no sampling), in this one process:

* **job**: a GenerationJob (source `prompts`, purpose `try_it`) created with
  `generation_job_create` and run by `generation_job_execute`, the code path the Celery worker
  runs: load the base model once, batched generation (`--batch`), outputs written to the
  database in batches, progress and heartbeats. Two figures: the job's own tokens/s (new
  tokens over the time spent in `generate`) and end to end (new tokens over the whole call:
  loading the model, the database writes and the bookkeeping included).
* **plain loop**: `AutoModelForCausalLM.from_pretrained` (loaded before the clock starts),
  then one `model.generate` per prompt, as one would write it by hand; tokens/s = new tokens
  (up to and including the end-of-sequence token) over the loop's wall time.

Ratio = job tokens/s ÷ plain-loop tokens/s (target ≥ 1.0×). It also reports whether both
sides wrote the same answers (greedy batched generation should equal one-at-a-time).

Needs PostgreSQL (DATABASE_URL; a throwaway test database `test_<name>` is created and
dropped) and nothing else. `tiny` is built on the fly; `smollm2` is read from
var/bench/models/ (prepared by bench/train_bench.py or `prepare_models`) and skipped when
missing. CPU unless CUDA is visible. Not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODELS_DIR = ROOT / "var" / "bench" / "models"


def setup_django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "redline.settings")
    import django

    django.setup()
    from django.db import connection

    original = connection.settings_dict["NAME"]
    # Its own throwaway database, so a test run on the same DATABASE_URL does not collide.
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"bench_generation_{original}"
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    return connection, original


def questions(n: int) -> list[list[dict]]:
    text = (ROOT / "training" / "ml" / "data" / "support_qa.txt").read_text(encoding="utf-8")
    found = list(dict.fromkeys(re.findall(r"^Customer: (.+)$", text, flags=re.M)))
    rows = [found[i % len(found)] for i in range(n)]
    return [[{"role": "user", "content": q}] for q in rows]


def model_dir(name: str) -> Path | None:
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
        except Exception as exc:  # the optional package is missing
            print(f"smollm2: skipped ({exc})")
            return None
    return dest


def plain_loop(folder: Path, prompts, max_new_tokens: int) -> dict:
    """What one writes by hand: load once, then model.generate per prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # The dtype the Generator uses (bf16 on CUDA, else fp32): a folder saved in bf16 would
    # otherwise load as bf16 on CPU, which is several times slower.
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokens, answers = 0, []
    start = time.perf_counter()
    for chat in prompts:
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
        with torch.inference_mode():
            out = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
        new = out[0, encoded["input_ids"].shape[1] :].tolist()
        count = new.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in new else len(new)
        tokens += count
        answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    seconds = time.perf_counter() - start
    del model
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "answers": answers,
    }


def job_run(folder: Path, name: str, prompts, max_new_tokens: int, batch: int) -> dict:
    from django.contrib.auth import get_user_model

    from curation.services.projects import project_create
    from training.models import GenerationOutput
    from training.services.generation import generation_job_create, generation_job_execute
    from training.services.runs import base_model_register

    user, _ = get_user_model().objects.get_or_create(username="bench", is_staff=True)
    project = project_create(created_by=user, name=f"Generation bench {name} {time.time_ns()}")
    base = base_model_register(name=f"bench-{name}-{time.time_ns()}", reference=str(folder))
    job = generation_job_create(
        project=project,
        targets=[(base, None)],
        source="prompts",
        purpose="try_it",
        prompts=prompts,
        decoding={"max_new_tokens": max_new_tokens, "temperature": 0, "batch_size": batch},
        created_by=user,
    )
    start = time.perf_counter()
    status = generation_job_execute(job.pk)
    seconds = time.perf_counter() - start
    job.refresh_from_db()
    assert status == "succeeded", job.log
    answers = list(
        GenerationOutput.objects.filter(job=job).order_by("index").values_list("output", flat=True)
    )
    return {
        "tokens": job.new_tokens,
        "seconds": seconds,
        "tokens_per_s": job.tokens_per_s,
        "end_to_end_tokens_per_s": job.new_tokens / seconds,
        "answers": answers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,smollm2")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tiny-tokens", type=int, default=64)
    parser.add_argument("--smollm2-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    connection, original_db = setup_django()
    from django.conf import settings

    settings.STORAGE_DIR = Path(tempfile.mkdtemp(prefix="generation-bench-"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, {args.prompts} chat prompts, "
        f"greedy, batch {args.batch}"
    )
    try:
        for name in args.models.split(","):
            folder = model_dir(name)
            if folder is None:
                continue
            tokens = args.tiny_tokens if name == "tiny" else args.smollm2_tokens
            prompts = questions(args.prompts)
            job_run(folder, name, prompts[:2], 4, args.batch)  # warm-up (allocator, kernels)
            plain = plain_loop(folder, prompts, tokens)
            job = job_run(folder, name, prompts, tokens, args.batch)
            same = sum(a == b for a, b in zip(plain["answers"], job["answers"], strict=True))
            print(
                f"\n{name} (max_new_tokens {tokens}):\n"
                f"  plain model.generate loop: {plain['tokens']:>6} tokens in "
                f"{plain['seconds']:7.2f} s = {plain['tokens_per_s']:8.1f} tokens/s\n"
                f"  generation job:            {job['tokens']:>6} tokens in "
                f"{job['seconds']:7.2f} s = {job['tokens_per_s']:8.1f} tokens/s generating, "
                f"{job['end_to_end_tokens_per_s']:8.1f} tokens/s end to end (load + writes)\n"
                f"  ratio job / plain: {job['tokens_per_s'] / plain['tokens_per_s']:.2f}x "
                f"generating, {job['end_to_end_tokens_per_s'] / plain['tokens_per_s']:.2f}x "
                f"end to end; identical answers {same}/{len(prompts)}"
            )
    finally:
        connection.creation.destroy_test_db(original_db, verbosity=0)


if __name__ == "__main__":
    main()
