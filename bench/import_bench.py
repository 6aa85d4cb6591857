"""Import benchmark: the real import service beside raw COPY FROM STDIN of the same rows.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/redline_bench_imports \\
    REDLINE_SECRET_KEY=... python bench/import_bench.py [--rows 1000000]

Generates JSONL files of 100,000 and ``--rows`` items (default 1,000,000; a third of them chat
``messages``, a third with two candidates, all with metadata), then for each size, each in a
fresh child process so peak RSS is that run's own:

* **import**: ``import_job_create`` + ``import_job_run`` into a new project (validation,
  staging with COPY, duplicate check, INSERT … SELECT into curation_item and
  curation_candidate with all their indexes and constraints, one transaction);
* **COPY baseline**: read the same file, ``json.loads`` each line and ``COPY FROM STDIN`` the
  item's fields (plus its first output and model) into an unindexed scratch table: the least
  work that gets the same rows from the same file into PostgreSQL.

Prints items/s, peak RSS and import/COPY ratio for both sizes. Needs PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "redline.settings")
    import django

    django.setup()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(path: Path, rows: int) -> None:
    if path.exists() and path.stat().st_size > 0:
        return
    rng = random.Random(rows)
    topics = ["refund", "delivery", "password", "invoice", "subscription", "warranty"]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for n in range(rows):
            topic = rng.choice(topics)
            question = f"Customer {n} asks about their {topic}: what should they do next?"
            answer = f"Thanks for asking about your {topic}. Here is what to do, step {n % 7}."
            obj: dict = {"external_id": f"bench-{n}"}
            if n % 3 == 1:
                obj["messages"] = [
                    {"role": "system", "content": "You are a support assistant."},
                    {"role": "user", "content": question},
                ]
            else:
                obj["prompt"] = question
            if n % 3 == 2:
                obj["candidates"] = [
                    {"output": answer, "model": "support-v3"},
                    {"output": answer + " (alternative)", "model": "support-v2"},
                ]
            else:
                obj["output"], obj["model"] = answer, "support-v3"
            obj["metadata"] = {"topic": topic, "ticket": 100000 + n}
            obj["priority"] = n % 5
            f.write(json.dumps(obj) + "\n")
    tmp.rename(path)


def child_import(path: Path, rows: int) -> dict:
    setup_django()
    from django.contrib.auth import get_user_model

    from curation.services import imports
    from curation.services.projects import project_create

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True}
    )
    project = project_create(name=f"Import bench {rows} {time.time_ns()}", created_by=user)
    job = imports.import_job_create(project=project, created_by=user, filename=path.name, path=path)
    start = time.perf_counter()
    job = imports.import_job_run(job_id=job.pk)
    seconds = time.perf_counter() - start
    assert job.status == "succeeded", (job.message, job.errors[:5])
    assert job.imported_count == rows, job.imported_count
    return {"seconds": seconds, "rows": rows, "rss_mib": peak_rss_mib(), "message": job.message}


def child_copy(path: Path, rows: int) -> dict:
    setup_django()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_copy_scratch")
        cursor.execute(
            "CREATE TABLE bench_copy_scratch (external_id text, prompt text, messages jsonb,"
            " metadata jsonb, priority integer, output text, model text)"
        )
    start = time.perf_counter()
    with (
        connection.cursor() as cursor,
        cursor.copy(
            "COPY bench_copy_scratch (external_id, prompt, messages, metadata, priority,"
            " output, model) FROM STDIN"
        ) as copy,
        open(path, "rb") as f,
    ):
        for raw in f:
            obj = json.loads(raw)
            first = obj["candidates"][0] if "candidates" in obj else obj
            messages = obj.get("messages")
            copy.write_row(
                (
                    obj["external_id"],
                    obj.get("prompt", ""),
                    json.dumps(messages) if messages else None,
                    json.dumps(obj.get("metadata") or {}),
                    obj.get("priority", 0),
                    first["output"],
                    first.get("model", ""),
                )
            )
    seconds = time.perf_counter() - start
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM bench_copy_scratch")
        (count,) = cursor.fetchone()
        cursor.execute("DROP TABLE bench_copy_scratch")
    assert count == rows, count
    return {"seconds": seconds, "rows": rows, "rss_mib": peak_rss_mib()}


def run_child(kind: str, path: Path, rows: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--file", str(path), "--rows", str(rows)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="the large file's size")
    parser.add_argument("--small", type=int, default=100_000, help="the small file's size")
    parser.add_argument("--dir", default=str(ROOT / "var" / "bench"))
    parser.add_argument("--child", choices=["import", "copy"], help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        fn = child_import if args.child == "import" else child_copy
        print(json.dumps(fn(Path(args.file), args.rows)))
        return

    setup_django()
    from django.db import connection

    if connection.vendor != "postgresql":
        sys.exit("The import benchmark needs PostgreSQL (set DATABASE_URL).")
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"PostgreSQL {connection.cursor().connection.info.server_version}, {os.cpu_count()} CPUs")
    results = []
    for rows in sorted({args.small, args.rows}):
        path = folder / f"import_{rows}.jsonl"
        t = time.perf_counter()
        generate(path, rows)
        size_mib = path.stat().st_size / 1024**2
        print(
            f"\n{rows:,} items: {path} ({size_mib:,.0f} MiB, ready in {time.perf_counter() - t:.1f} s)"
        )
        copy = run_child("copy", path, rows)
        imp = run_child("import", path, rows)
        copy_rate, imp_rate = rows / copy["seconds"], rows / imp["seconds"]
        print(
            f"  COPY baseline : {copy['seconds']:7.1f} s  {copy_rate:10,.0f} items/s"
            f"  peak RSS {copy['rss_mib']:6.0f} MiB"
        )
        print(
            f"  import        : {imp['seconds']:7.1f} s  {imp_rate:10,.0f} items/s"
            f"  peak RSS {imp['rss_mib']:6.0f} MiB   ({imp['message']})"
        )
        print(f"  import / COPY : {imp_rate / copy_rate:.0%}")
        results.append((rows, size_mib, copy_rate, imp_rate, imp["rss_mib"]))
    print("\nsummary")
    print("  items       file MiB   COPY items/s  import items/s  ratio  import peak RSS MiB")
    for rows, size_mib, copy_rate, imp_rate, rss in results:
        print(
            f"  {rows:<11,} {size_mib:8.0f}   {copy_rate:12,.0f}  {imp_rate:14,.0f}"
            f"  {imp_rate / copy_rate:5.0%}  {rss:8.0f}"
        )


if __name__ == "__main__":
    main()
