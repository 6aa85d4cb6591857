"""Dataset build benchmark: the real build beside raw COPY of the same columns.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/redline_datasets \\
    REDLINE_SECRET_KEY=... python bench/dataset_bench.py [--sizes 10000 100000 1000000]

For each size N (default 10,000 and 100,000; pass 1000000 for the full run) a project with N
accepted decisions is generated with bulk SQL (``INSERT … SELECT generate_series``; kept and
reused on later runs): a third chats, the rest plain prompts; 60% accepted as they were, 30%
corrected, 10% comparisons of two outputs; one expert, k = 1, outputs of ~250 characters.
Then, each in a fresh child process so that its peak RSS is its own:

* **COPY baseline**: ``COPY (<the decision SELECT>) TO STDOUT``, every byte read by psycopg:
  the raw columns (items, outcomes, outputs, review ids, experts, guideline versions) from
  the build's query, with nothing done to them (the build's own variant also has PostgreSQL
  write part of the lineage JSON: extra work counted on the build's side);
* **build**: ``dataset_version_request`` + ``dataset_version_build`` (SFT + preference + KTO,
  eval 10%, dedup on): stream, map, encode, hash, write, deduplicate, manifest.

Each size is run ``--repeat`` times (default 3), COPY and build alternated so both see the
same machine; every rebuild must give the same sha256. Prints, per run, decisions/s and
output rows/s, the build/COPY ratio, peak RSS (the build's process and its helper, when a
second process ran) and CPU seconds of each process plus its PostgreSQL backend (read from
/proc: a figure that does not depend on how busy a shared machine is); then medians with
min and max per size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def backend_cpu_seconds(pid: int) -> float | None:
    """CPU time of the PostgreSQL backend ``pid`` so far, from /proc (None when the server
    is not on this machine): with the process's own, a measure that does not depend on how
    busy the machine is."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def children_peak_rss_mib() -> float:
    """The largest peak RSS among the processes this one waited for (the build's helper)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


GENERATE = """
INSERT INTO curation_item (project_id, external_id, prompt, messages, metadata, priority,
    status, review_count, held_slots, source, created_at)
SELECT %(project)s, 'bench-' || g,
    CASE WHEN g %% 3 = 1 THEN '' ELSE 'Customer ' || g || ' asks about their '
        || (ARRAY['refund','delivery','password','invoice','subscription','warranty'])[g %% 6 + 1]
        || ': what should they do next?' END,
    CASE WHEN g %% 3 = 1 THEN jsonb_build_array(
        jsonb_build_object('role', 'system', 'content', 'You are a support assistant.'),
        jsonb_build_object('role', 'user', 'content', 'Customer ' || g || ' asks about their '
            || (ARRAY['refund','delivery','password','invoice','subscription','warranty'])[g %% 6 + 1]
            || ': what should they do next?')) END,
    '{}'::jsonb, 0, 'complete', 1, 1, 'bench', now()
FROM generate_series(1, %(rows)s) g;

INSERT INTO curation_candidate (item_id, position, output, model)
SELECT i.id, p.position,
    CASE WHEN p.position = 0 THEN 'Thanks for asking. Here is what to do, step '
        ELSE 'An alternative answer: try step ' END
    || (substr(i.external_id, 7)::int %% 7)
    || '. Open your account page, choose the order in question and follow the instructions'
    || ' shown there; if nothing changes within two working days, write to us again and quote'
    || ' reference ' || i.external_id || '. We are sorry for the trouble.',
    CASE WHEN p.position = 0 THEN 'support-v3' ELSE 'support-v2' END
FROM curation_item i
JOIN LATERAL (SELECT generate_series(0, CASE WHEN substr(i.external_id, 7)::int %% 10 = 0
    THEN 1 ELSE 0 END) AS position) p ON true
WHERE i.project_id = %(project)s;

INSERT INTO feedback_review (project_id, item_id, expert_id, verdict, candidate_id,
    corrected_output, preferred_candidate_id, tie, labels, rationale, candidate_order,
    idempotency_key, revision, created_at, updated_at)
SELECT %(project)s, i.id, %(expert)s,
    CASE WHEN g %% 10 IN (1, 2, 3) THEN 'correct' ELSE 'accept' END,
    c.id,
    CASE WHEN g %% 10 IN (1, 2, 3) THEN c.output || ' Also, see the help pages.' ELSE '' END,
    CASE WHEN g %% 10 = 0 THEN c.id END,
    false, '{}'::jsonb, '', '[]'::jsonb, '', 1, now(), now()
FROM curation_item i
CROSS JOIN LATERAL (SELECT substr(i.external_id, 7)::int AS g) n
JOIN curation_candidate c ON c.item_id = i.id AND c.position = 0
WHERE i.project_id = %(project)s;

INSERT INTO feedback_itemoutcome (item_id, project_id, outcome, source, final_candidate_id,
    final_text, preferred_candidate_id, tie, agreement, review_count, note, decided_at)
SELECT r.item_id, %(project)s, 'accepted', 'unanimous', r.candidate_id,
    CASE WHEN r.verdict = 'correct' THEN r.corrected_output ELSE c.output END,
    r.preferred_candidate_id, false, 1.0, 1, '', now()
FROM feedback_review r JOIN curation_candidate c ON c.id = r.candidate_id
WHERE r.project_id = %(project)s;
"""


def project_for(rows: int):
    """The bench project with ``rows`` accepted decisions, generated once."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from curation.models import Project
    from curation.services.projects import project_create

    slug = f"bench-datasets-{rows}"
    project = Project.objects.filter(slug=slug).first()
    if project is not None:
        return project
    users = get_user_model().objects
    admin, _ = users.get_or_create(username="bench-admin", defaults={"is_staff": True})
    expert, _ = users.get_or_create(username="bench-expert")
    start = time.perf_counter()
    with transaction.atomic():
        project = project_create(name=f"Dataset bench {rows}", created_by=admin)
        project.slug = slug
        project.save(update_fields=["slug"])
        with connection.cursor() as cursor:
            for statement in GENERATE.split(";\n"):
                if statement.strip():
                    cursor.execute(
                        statement, {"project": project.pk, "rows": rows, "expert": expert.pk}
                    )
    with connection.cursor() as cursor:
        for table in (
            "curation_item",
            "curation_candidate",
            "feedback_review",
            "feedback_itemoutcome",
        ):
            cursor.execute(f"ANALYZE {table}")
    print(f"  generated {rows:,} decisions in {time.perf_counter() - start:.1f} s", flush=True)
    return project


def child_copy(slug: str) -> dict:
    setup_django()
    from django.db import connection

    from curation.models import Project
    from training import selectors
    from training.services import params_clean

    project = Project.objects.get(slug=slug)
    params = params_clean(project=project, raw={})
    sql, sql_params = selectors.decision_stream_sql(project=project, filters=params["filters"])
    pid = backend_pid()
    cpu, server_cpu = cpu_seconds(), backend_cpu_seconds(pid)
    start = time.perf_counter()
    size = lines = 0
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY ({sql}) TO STDOUT", sql_params) as copy,
    ):
        for block in copy:
            size += len(block)
            lines += bytes(block).count(b"\n")
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": lines,
        "bytes": size,
        "rss_mib": peak_rss_mib(),
        **_cpu_since(cpu, server_cpu, pid),
    }


def _cpu_since(cpu: float, server_cpu: float | None, pid: int) -> dict:
    server = backend_cpu_seconds(pid)
    return {
        "cpu_seconds": cpu_seconds() - cpu,
        "server_cpu_seconds": None if server is None or server_cpu is None else server - server_cpu,
    }


def child_build(slug: str) -> dict:
    setup_django()
    from curation.models import Project
    from training.services import (
        dataset_version_build,
        dataset_version_delete,
        dataset_version_request,
    )

    project = Project.objects.get(slug=slug)
    for old in project.dataset_versions.all():
        dataset_version_delete(version=old)
    pid = backend_pid()  # the connection the request and the build run on
    cpu, server_cpu = cpu_seconds(), backend_cpu_seconds(pid)
    start = time.perf_counter()
    version, _ = dataset_version_request(
        project=project, user=None, params={"eval_fraction": 0.1}, via="cli", enqueue=False
    )
    requested = time.perf_counter()
    version = dataset_version_build(version_id=version.pk)
    seconds = time.perf_counter() - start
    assert version.status == "succeeded", version.error
    return {
        "seconds": seconds,
        "items": version.items_total,
        "rows": version.rows_total,
        "bytes": version.size_bytes,
        "counts": version.row_counts,
        "dropped": version.manifest["duplicates_dropped"],
        "sha256": version.content_sha256,
        "task_seconds": seconds - (requested - start),
        "rss_mib": peak_rss_mib(),
        "helper_rss_mib": children_peak_rss_mib(),
        # the build's own process and its connection (a helper process, when one ran, and
        # the progress connection are not counted: see helper_rss_mib)
        **_cpu_since(cpu, server_cpu, pid),
    }


def run_child(kind: str, slug: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--project", slug],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--repeat", type=int, default=3, help="alternated COPY and build runs per size"
    )
    parser.add_argument("--child", choices=["copy", "build"], help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        fn = child_copy if args.child == "copy" else child_build
        print(json.dumps(fn(args.project)))
        return

    setup_django()
    from django.db import connection

    if connection.vendor != "postgresql":
        sys.exit("The dataset benchmark needs PostgreSQL (set DATABASE_URL).")
    print(
        f"PostgreSQL {connection.cursor().connection.info.server_version}, "
        f"{os.cpu_count()} CPUs (shared), Python {sys.version.split()[0]}"
    )
    results = []
    for rows in sorted(args.sizes):
        print(f"\n{rows:,} accepted decisions", flush=True)
        slug = project_for(rows).slug
        copies, builds = [], []
        for attempt in range(args.repeat):  # alternated, so both see the same machine
            copy = run_child("copy", slug)
            build = run_child("build", slug)
            assert copy["rows"] == build["items"] == rows, (copy["rows"], build["items"])
            if builds:
                assert build["sha256"] == builds[0]["sha256"], "a rebuild gave other bytes"
            copies.append(copy)
            builds.append(build)
            copy_rate = rows / copy["seconds"]
            build_rate = rows / build["seconds"]
            print(
                f"  run {attempt + 1}: COPY {copy['seconds']:6.2f} s {copy_rate:9,.0f} dec/s"
                f" | build {build['seconds']:6.2f} s {build_rate:9,.0f} dec/s"
                f" {build['rows'] / build['seconds']:9,.0f} rows/s"
                f" (task alone {build['task_seconds']:6.2f} s)"
                f" | ratio {build_rate / copy_rate:4.0%}"
                f" | RSS build {build['rss_mib']:4.0f} MiB, helper {build['helper_rss_mib']:4.0f}"
                f" MiB, COPY {copy['rss_mib']:4.0f} MiB | load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            if copy["server_cpu_seconds"] is not None and build["server_cpu_seconds"] is not None:
                copy_cpu = copy["cpu_seconds"] + copy["server_cpu_seconds"]
                build_cpu = build["cpu_seconds"] + build["server_cpu_seconds"]
                print(
                    f"         CPU (process + its PostgreSQL backend): COPY {copy_cpu:6.2f} s"
                    f" ({copy['server_cpu_seconds']:.2f} server) | build {build_cpu:6.2f} s"
                    f" ({build['server_cpu_seconds']:.2f} server) | ratio {copy_cpu / build_cpu:4.0%}",
                    flush=True,
                )
        build = builds[0]
        print(
            f"  rows {build['rows']:,} ({build['bytes'] / 1024**2:,.0f} MiB with lineage)"
            f"  {json.dumps(build['counts'])}  sha256 {build['sha256'][:16]}…"
        )
        ratios = sorted(
            (rows / b["seconds"]) / (rows / c["seconds"])
            for c, b in zip(copies, builds, strict=True)
        )
        results.append(
            (
                rows,
                statistics.median(rows / c["seconds"] for c in copies),
                statistics.median(rows / b["seconds"] for b in builds),
                statistics.median(b["rows"] / b["seconds"] for b in builds),
                ratios,
                build["rows"],
                max(max(b["rss_mib"], b["helper_rss_mib"]) for b in builds),
                max(c["rss_mib"] for c in copies),
            )
        )
    print(f"\nsummary (medians of {args.repeat} alternated runs; ratio min–median–max)")
    print(
        "  decisions   COPY dec/s  build dec/s  build rows/s  ratio            rows written"
        "  build RSS MiB  COPY RSS MiB"
    )
    for rows, copy_rate, build_rate, rows_rate, ratios, out_rows, rss, copy_rss in results:
        spread = f"{ratios[0]:.0%}–{statistics.median(ratios):.0%}–{ratios[-1]:.0%}"
        print(
            f"  {rows:<11,} {copy_rate:10,.0f}  {build_rate:11,.0f}  {rows_rate:12,.0f}  {spread:15}"
            f"  {out_rows:12,}  {rss:13.0f}  {copy_rss:12.0f}"
        )


if __name__ == "__main__":
    main()
