"""Dataset build benchmark: the real build beside raw COPY of the same columns.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/redline_datasets \\
    REDLINE_SECRET_KEY=... python bench/dataset_bench.py [--sizes 10000 100000 1000000]

For each size N (default 10,000 and 100,000; pass 1000000 for the full run) a project with N
accepted decisions is generated with bulk SQL (``INSERT … SELECT generate_series``; kept and
reused on later runs): a third chats, the rest plain prompts; 60% accepted as they were, 30%
corrected, 10% comparisons of two outputs; one expert, k = 1, outputs of ~250 characters.
Then, each in a fresh child process so that its peak RSS is its own:

* **COPY baseline**: ``COPY (<the build's own SELECT>) TO STDOUT``, every byte read by
  psycopg: the same columns (items, outcomes, outputs, review ids, experts, guideline
  versions) from the same query, with nothing done to them;
* **build**: ``dataset_version_request`` + ``dataset_version_build`` (SFT + preference + KTO,
  eval 10%, dedup on): stream, map, encode, hash, write, deduplicate, manifest.

Prints decisions/s and output rows/s, the build/COPY ratio and peak RSS for each size.
"""

from __future__ import annotations

import argparse
import json
import os
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
    return {"seconds": seconds, "rows": lines, "bytes": size, "rss_mib": peak_rss_mib()}


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
    start = time.perf_counter()
    version, _ = dataset_version_request(
        project=project, user=None, params={"eval_fraction": 0.1}, via="cli", enqueue=False
    )
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
        "rss_mib": peak_rss_mib(),
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
        copy = run_child("copy", slug)
        build = run_child("build", slug)
        assert copy["rows"] == build["items"] == rows, (copy["rows"], build["items"])
        copy_rate = rows / copy["seconds"]
        build_rate = rows / build["seconds"]
        print(
            f"  COPY baseline : {copy['seconds']:7.2f} s  {copy_rate:10,.0f} decisions/s"
            f"  {copy['bytes'] / 1024**2:7.0f} MiB read   peak RSS {copy['rss_mib']:5.0f} MiB"
        )
        print(
            f"  build         : {build['seconds']:7.2f} s  {build_rate:10,.0f} decisions/s"
            f"  {build['rows'] / build['seconds']:10,.0f} rows/s  peak RSS {build['rss_mib']:5.0f} MiB"
        )
        print(
            f"  build / COPY  : {build_rate / copy_rate:.0%}   rows {build['rows']:,} "
            f"({build['bytes'] / 1024**2:,.0f} MiB with lineage)  {json.dumps(build['counts'])}"
        )
        results.append(
            (rows, copy_rate, build_rate, build["rows"], build["rss_mib"], copy["rss_mib"])
        )
    print("\nsummary")
    print("  decisions   COPY dec/s  build dec/s  ratio  rows written  build RSS MiB  COPY RSS MiB")
    for rows, copy_rate, build_rate, out_rows, rss, copy_rss in results:
        print(
            f"  {rows:<11,} {copy_rate:10,.0f}  {build_rate:11,.0f}  {build_rate / copy_rate:5.0%}"
            f"  {out_rows:12,}  {rss:13.0f}  {copy_rss:12.0f}"
        )


if __name__ == "__main__":
    main()
