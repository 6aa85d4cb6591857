"""Queue claim benchmark: latency of POST /queue/claim/ over HTTP against gunicorn.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/redline_bench \\
    python bench/claim_bench.py [--sizes 10000,1000000] [--concurrency 1,8,32] [--seconds 10]

For each project size and number of concurrent experts it prints p50/p95/p99 of the claim
request beside a trivial authenticated GET (`GET /api/v1/projects/{slug}/`) measured in the
same run at the same concurrency, and the ratio of the two p95s. Each expert loops: claim →
decide (the decision is recorded through `queue_record_decision` in a helper process, so this
measures the queue alone; bench/review_bench.py measures the real submit-then-next over HTTP)
→ claim the next. A last scenario runs the claim → decide
loop with 32 experts on a 100k-item project and prints decisions per second. After every
scenario, SQL checks that no item was held by more than k experts and no expert got an item
twice. The claim query's plan (EXPLAIN ANALYZE on the 1M project) is printed too.

Needs PostgreSQL (the database in DATABASE_URL is created if missing). Not a test: run by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/redline_bench")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/8")
os.environ.setdefault(
    "REDLINE_SECRET_KEY", "bench-only-secret-key-not-for-production-0123456789abcdef"
)
os.environ.setdefault("REDLINE_HTTPS", "0")
os.environ.setdefault("REDLINE_ALLOWED_HOSTS", "127.0.0.1,localhost")
os.environ.setdefault("REDLINE_VAR_DIR", str(ROOT / "var" / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "redline.settings")
os.environ.setdefault("REDLINE_LOG_LEVEL", "WARNING")


def ensure_database() -> None:
    import psycopg

    from redline.lib.env import parse_database_url

    db = parse_database_url("DATABASE_URL", os.environ["DATABASE_URL"])
    with psycopg.connect(
        host=db["HOST"],
        port=db["PORT"] or 5432,
        user=db["USER"],
        dbname="postgres",
        autocommit=True,
    ) as conn:
        if not conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]
        ).fetchone():
            conn.execute(f'CREATE DATABASE "{db["NAME"]}"')


ensure_database()
import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from curation.models import Item, Project  # noqa: E402
from curation.services.projects import membership_set, project_create  # noqa: E402
from curation.services.queue import claim_candidate_sql, queue_record_decision  # noqa: E402

EXPERTS = 32


# ---- data ------------------------------------------------------------------------------------


def project_with_items(n: int) -> Project:
    """A project holding exactly n open items (each with one candidate), made in SQL."""
    slug = f"bench-{n}"
    admin, _ = get_user_model().objects.get_or_create(username="bench-admin", is_staff=True)
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        project = project_create(name=f"Bench {n}", slug=slug, created_by=admin)
    with connection.cursor() as cur:
        cur.execute("DELETE FROM curation_assignment WHERE project_id = %s", [project.pk])
        cur.execute("SELECT count(*) FROM curation_item WHERE project_id = %s", [project.pk])
        if cur.fetchone()[0] != n:
            cur.execute("DELETE FROM curation_item WHERE project_id = %s", [project.pk])
            print(f"  generating {n:,} items …", flush=True)
            cur.execute(
                """
                INSERT INTO curation_item (project_id, external_id, prompt, messages, metadata,
                    priority, status, review_count, held_slots, source, created_at)
                SELECT %s, 'ext-' || g, 'How do I reset my password? #' || g, NULL, '{}'::jsonb,
                    (g %% 3), 'open', 0, 0, 'bench', now() - (g || ' seconds')::interval
                FROM generate_series(1, %s) AS g
                """,
                [project.pk, n],
            )
            cur.execute(
                """
                INSERT INTO curation_candidate (item_id, position, output, model)
                SELECT id, 0, 'Open Settings, then Security, then Reset password.', 'bench-model'
                FROM curation_item WHERE project_id = %s
                """,
                [project.pk],
            )
            cur.execute("ANALYZE curation_item; ANALYZE curation_candidate")
        else:
            cur.execute(
                """UPDATE curation_item SET status = 'open', review_count = 0, held_slots = 0,
                   next_lapse_at = NULL WHERE project_id = %s AND (held_slots > 0 OR status <> 'open')""",
                [project.pk],
            )
    return project


def experts_for(project: Project) -> list[tuple[object, str]]:
    users = []
    for i in range(EXPERTS):
        user, _ = get_user_model().objects.get_or_create(username=f"bench-expert-{i}")
        membership_set(project=project, username=user.username, role="expert")
        token, _ = Token.objects.get_or_create(user=user)
        users.append((user, token.key))
    return users


# ---- server ----------------------------------------------------------------------------------


def free_port() -> int:
    """BENCH_PORT when set (machines shared with others hand out port ranges), else any."""
    if os.environ.get("BENCH_PORT"):
        return int(os.environ["BENCH_PORT"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "redline.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            # One worker per core, each with enough threads to cover the time its requests
            # wait on PostgreSQL (bench/review_bench.py compared 3×4, 3×8, 2×6 and sync).
            "--workers",
            os.environ.get("BENCH_WORKERS", "2"),
            "--worker-class",
            os.environ.get("BENCH_WORKER_CLASS", "gthread"),
            "--threads",
            os.environ.get("BENCH_THREADS", "6"),
            "--keep-alive",
            "30",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, "REDLINE_DB_CONN_MAX_AGE": "600"},
        start_new_session=True,
    )
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gunicorn did not start")


# ---- a small keep-alive HTTP/1.1 client (cheap enough not to steal the server's CPU) ---------


class Http:
    def __init__(self, port: int, token: str):
        self.port, self.token = port, token
        self.reader = self.writer = None

    async def request(self, method: str, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Token {self.token}\r\nContent-Length: 0\r\n\r\n"
        )
        self.writer.write(head.encode())
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                close = True
        body = await self.reader.readexactly(length) if length else b""
        if close:
            self.writer.close()
            self.reader = self.writer = None
        return status, body

    def close(self):
        if self.writer is not None:
            self.writer.close()


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    if len(samples) < 2:
        return (samples[0],) * 3 if samples else (float("nan"),) * 3
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49], q[94], q[98]


def decide(item_id: int, user_id: int) -> None:
    """Record a counted decision (in a worker process, so this client's event loop, which
    times the HTTP requests, never waits on the GIL for it)."""
    with transaction.atomic():
        queue_record_decision(
            item=Item(pk=item_id), expert=get_user_model()(pk=user_id), counted=True
        )


async def run_clients(port, users, concurrency, seconds, *, path, claim, pool):
    latencies: list[float] = []
    decided = 0
    deadline = time.perf_counter() + seconds

    async def client(user, token):
        nonlocal decided
        http = Http(port, token)
        loop = asyncio.get_running_loop()
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                status, body = await http.request("POST" if claim else "GET", path)
                latencies.append(time.perf_counter() - t0)
                if claim:
                    if status == 204:
                        return
                    assert status == 200, (status, body[:200])
                    item_id = json.loads(body)["item"]["id"]
                    await loop.run_in_executor(pool, decide, item_id, user.pk)
                    decided += 1
                else:
                    assert status == 200, (status, body[:200])
        finally:
            http.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(u, t) for u, t in users[:concurrency]))
    return latencies, decided, time.perf_counter() - started


def integrity(project: Project) -> tuple[int, int]:
    with connection.cursor() as cur:
        cur.execute(
            """SELECT count(*) FROM (SELECT item_id FROM curation_assignment
               WHERE project_id = %s AND state IN ('leased', 'submitted')
               GROUP BY item_id HAVING count(*) > %s) x""",
            [project.pk, project.overlap],
        )
        over_k = cur.fetchone()[0]
        cur.execute(
            """SELECT count(*) FROM (SELECT item_id, expert_id FROM curation_assignment
               WHERE project_id = %s GROUP BY item_id, expert_id HAVING count(*) > 1) x""",
            [project.pk],
        )
        return over_k, cur.fetchone()[0]


def explain(project: Project, user) -> str:
    from django.utils import timezone

    sql, params = claim_candidate_sql(project, user, now=timezone.now())
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return "\n".join(row[0] for row in cur.fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--loop-items", type=int, default=100_000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]

    print("Redline claim benchmark", time.strftime("%Y-%m-%d %H:%M"), f"on {os.cpu_count()} cores")
    call_command("migrate", verbosity=0)
    port = free_port()
    server = start_server(port)
    # Decisions run in worker processes; "spawn" re-runs this module's set-up there, so no
    # database connection is shared across a fork.
    pool = ProcessPoolExecutor(max_workers=4, mp_context=multiprocessing.get_context("spawn"))
    rows = []
    try:
        for n in sizes:
            project = project_with_items(n)
            users = experts_for(project)
            detail = f"/api/v1/projects/{project.slug}/"
            claim = f"/api/v1/projects/{project.slug}/queue/claim/"
            asyncio.run(
                run_clients(port, users, 4, 1.5, path=detail, claim=False, pool=pool)
            )  # warm up
            for c in levels:
                trivial, _, _ = asyncio.run(
                    run_clients(port, users, c, args.seconds, path=detail, claim=False, pool=pool)
                )
                claims, decided, wall = asyncio.run(
                    run_clients(port, users, c, args.seconds, path=claim, claim=True, pool=pool)
                )
                over_k, twice = integrity(project)
                tp, cp = percentiles(trivial), percentiles(claims)
                rows.append((n, c, tp, cp, decided / wall, over_k, twice))
                print(
                    f"  {n:>9,} items  {c:>2} experts  trivial GET p50/p95/p99 "
                    f"{tp[0] * 1e3:6.1f}/{tp[1] * 1e3:6.1f}/{tp[2] * 1e3:6.1f} ms   claim "
                    f"{cp[0] * 1e3:6.1f}/{cp[1] * 1e3:6.1f}/{cp[2] * 1e3:6.1f} ms   "
                    f"p95 ratio {cp[1] / tp[1]:4.2f}   {decided / wall:6.1f} decisions/s   "
                    f"over-k {over_k}  twice {twice}",
                    flush=True,
                )
            if n == max(sizes):
                print(f"\nClaim query plan on {n:,} items:\n" + explain(project, users[0][0]))

        project = project_with_items(args.loop_items)
        users = experts_for(project)
        claim = f"/api/v1/projects/{project.slug}/queue/claim/"
        claims, decided, wall = asyncio.run(
            run_clients(port, users, EXPERTS, args.seconds * 2, path=claim, claim=True, pool=pool)
        )
        over_k, twice = integrity(project)
        cp = percentiles(claims)
        print(
            f"\nClaim → decide loop, {args.loop_items:,} items, {EXPERTS} experts over HTTP: "
            f"{decided / wall:.1f} decisions/s, claim p50/p95/p99 {cp[0] * 1e3:.1f}/{cp[1] * 1e3:.1f}/"
            f"{cp[2] * 1e3:.1f} ms, over-k {over_k}, twice {twice}"
        )
    finally:
        pool.shutdown()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
