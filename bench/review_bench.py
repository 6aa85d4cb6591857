"""Review benchmark: the review page and submit-then-next over HTTP against gunicorn.

    python bench/review_bench.py [--items 1000000] [--loop-items 100000] [--samples 400]

1. On a project of ``--items`` items (default 1M), one expert works through the queue in the
   browser's way: the review page (full GET), then submit-then-next as the page's htmx POST,
   whose answer is the next item's fragment. Prints p50/p95/p99 of **server time** (the
   ``Server-Timing`` header, REDLINE_SERVER_TIMING=1) for both, and the bytes transferred per
   item after the first page (the fragment's body).
2. The same submit-then-next through the API (``POST /api/v1/items/{id}/reviews/`` with
   ``claim_next``), server time p50/p95/p99.
3. 32 experts at once over HTTP on a ``--loop-items`` project (default 100k), each looping
   submit-then-next through the API: decisions per second, next-item latency p50/p95/p99 as the
   client sees it, CPU per decision of the web server's processes, of this database's
   PostgreSQL backends and of this client (from /proc), how much CPU other processes on the
   machine used meanwhile, and SQL checks afterwards that no item got more than k holders or
   reviews and nobody got an item twice. Label Studio 1.23 on this kind of machine: ~5
   decisions/s, next-task p95 ~5 s.

The client is a small asyncio HTTP/1.1 keep-alive client (about 0.25 ms of CPU per decision),
so it takes little CPU from the server; the server is gunicorn in its own processes
(``BENCH_WORKERS`` × ``BENCH_THREADS`` gthread, default 2 × 6; ``BENCH_WORKER_CLASS``;
``BENCH_PORT``, default any free port), with real token authentication and PostgreSQL.
Every scenario starts from a vacuumed project whose items lie as a fresh import leaves them,
and the loop's figures end with the share of item updates PostgreSQL made HOT (without new
index entries). On a machine shared with other work, run it a few times: the CPU per decision
moves less than decisions per second.

Needs PostgreSQL (DATABASE_URL; the database is created if missing). Not a test: run by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["REDLINE_SERVER_TIMING"] = "1"

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench import claim_bench as cb  # noqa: E402  (sets up Django on the bench database)
from curation.models import Project  # noqa: E402

TIMING = re.compile(rb"app;dur=([0-9.]+)")
CSRF_INPUT = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


class Http:
    """Keep-alive HTTP/1.1 client with cookies or a token; returns (status, headers, body)."""

    def __init__(self, port: int, *, token: str = "", cookies: dict | None = None):
        self.port, self.token, self.cookies = port, token, dict(cookies or {})
        self.reader = self.writer = None

    async def request(self, method, path, *, body=b"", content_type="", headers=None):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        if self.token:
            lines.append(f"Authorization: Token {self.token}")
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status = int((await self.reader.readline()).split()[1])
        found: dict[str, str] = {}
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            found[name] = value
            if name == "content-length":
                length = int(value)
            elif name == "connection" and "close" in value.lower():
                close = True
            elif name == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";", 1)[0]
        data = await self.reader.readexactly(length) if length else b""
        if close:
            self.writer.close()
            self.reader = self.writer = None
        return status, found, data

    def close(self):
        if self.writer is not None:
            self.writer.close()


def server_ms(headers: dict) -> float:
    match = TIMING.search(headers.get("server-timing", "").encode())
    return float(match.group(1)) if match else float("nan")


def fmt(samples: list[float], scale: float = 1.0) -> str:
    p50, p95, p99 = cb.percentiles(samples)
    return f"{p50 * scale:6.2f} / {p95 * scale:6.2f} / {p99 * scale:6.2f}"


def prepare(n: int) -> tuple[Project, list]:
    """A project of n open items with no decisions from earlier runs, and its 32 experts."""
    project = Project.objects.filter(slug=f"bench-{n}").first()
    if project is not None:
        forget_decisions(project)
    project = cb.project_with_items(n)
    # Resetting leaves dead rows and index entries behind; without a vacuum every run would
    # start slower than the one before (production tables are autovacuumed). The items are
    # rewritten as a fresh import leaves them (pages filled up to the table's fillfactor):
    # otherwise the room the last run's dead rows left would make every run but the first
    # look better than newly imported items are served.
    with connection.cursor() as cur:
        cur.execute("VACUUM FULL curation_item")
        for table in (
            "curation_item",
            "curation_assignment",
            "feedback_review",
            "feedback_reviewrevision",
            "feedback_auditevent",
            "feedback_itemoutcome",
        ):
            cur.execute(f"VACUUM ANALYZE {table}")
    return project, cb.experts_for(project)


def forget_decisions(project: Project) -> None:
    with connection.cursor() as cur:
        for table in ("feedback_auditevent", "feedback_itemoutcome"):
            cur.execute(f"DELETE FROM {table} WHERE project_id = %s", [project.pk])
        cur.execute(
            "DELETE FROM feedback_reviewrevision WHERE review_id IN "
            "(SELECT id FROM feedback_review WHERE project_id = %s)",
            [project.pk],
        )
        cur.execute("DELETE FROM feedback_review WHERE project_id = %s", [project.pk])


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc (0 when it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(server) -> dict[str, dict[int, float]]:
    """CPU used so far by the web server's processes, this database's PostgreSQL backends and
    this client (Linux only: /proc; everything runs on this machine)."""
    server_pids = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _pgid(int(p.name)) == server.pid
    ]
    with connection.cursor() as cur:
        cur.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        db_pids = [row[0] for row in cur.fetchall()]
    return {
        "server": {pid: _proc_cpu(pid) for pid in server_pids},
        "db": {pid: _proc_cpu(pid) for pid in db_pids},
        "client": {0: sum(os.times()[:2])},
        "machine": {0: _machine_busy()},
    }


def _machine_busy() -> float:
    """CPU seconds every process on the machine has used (all cores; /proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def cpu_used(before: dict, after: dict) -> dict[str, float]:
    """Seconds of CPU per role between two snapshots (processes started in between count
    from zero)."""
    return {
        role: sum(t - before[role].get(pid, 0.0) for pid, t in after[role].items())
        for role in after
    }


def integrity(project: Project) -> tuple[int, int, int]:
    over_k, twice = cb.integrity(project)
    with connection.cursor() as cur:
        cur.execute(
            """SELECT count(*) FROM (SELECT item_id FROM feedback_review
               WHERE project_id = %s AND verdict <> 'skip'
               GROUP BY item_id HAVING count(*) > %s) x""",
            [project.pk, project.overlap],
        )
        return over_k, twice, cur.fetchone()[0]


def item_updates() -> tuple[int, int]:
    """curation_item's (updates, HOT updates) so far, as PostgreSQL's statistics have them.
    A backend sends its counts at most once a second while busy and when it exits: read
    after the server's processes have stopped for an exact figure."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_stat_force_next_flush()")  # this process's own counts
        cur.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
            " WHERE relname = 'curation_item'"
        )
        return cur.fetchone()


# ---- 1. the review page ----------------------------------------------------------------------


async def login(port: int, username: str, password: str) -> Http:
    http = Http(port)
    status, _, body = await http.request("GET", "/accounts/login/")
    match = CSRF_INPUT.search(body)
    assert status == 200 and match, (status, body[:300])
    token = match.group(1).decode()
    form = urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token})
    status, _, _ = await http.request(
        "POST",
        "/accounts/login/",
        body=form.encode(),
        content_type="application/x-www-form-urlencoded",
        headers={"Referer": f"http://127.0.0.1:{port}/accounts/login/"},
    )
    assert status == 302, f"login failed: {status}"
    return http


FORM = re.compile(rb'<form[^>]*id="review-form"[^>]*hx-post="([^"]+)"', re.S)
HIDDEN = re.compile(rb'<input type="hidden" name="([^"]+)" value="([^"]*)"')


def form_fields(body: bytes) -> tuple[str, dict]:
    """The review form's submit URL and its hidden fields, read from the page as a browser
    would."""
    match = FORM.search(body)
    assert match, body[:2000]
    fields = {k.decode(): v.decode() for k, v in HIDDEN.findall(body)}
    return match.group(1).decode().replace("&amp;", "&"), fields


def page_user() -> str:
    user = get_user_model().objects.get(username="bench-expert-0")
    user.set_password("bench-password")
    user.save(update_fields=["password"])
    return user.username


async def review_page(port: int, project: Project, samples: int, username: str) -> dict:
    http = await login(port, username, "bench-password")
    page = f"/projects/{project.slug}/review/"
    full, submit, sizes, first_sizes = [], [], [], []
    for _ in range(20):  # warm up
        status, headers, body = await http.request("GET", page)
    for _ in range(samples // 4):
        status, headers, body = await http.request("GET", page)
        assert status == 200, status
        full.append(server_ms(headers))
        first_sizes.append(len(body))
    csrf = http.cookies["csrftoken"]
    status, headers, body = await http.request("GET", page)
    for _ in range(samples):
        url, fields = form_fields(body)
        fields.update({"verdict": "accept", "rationale": ""})
        status, headers, body = await http.request(
            "POST",
            url,
            body=urlencode(fields).encode(),
            content_type="application/x-www-form-urlencoded",
            headers={"HX-Request": "true", "X-CSRFToken": csrf, "HX-Target": "review"},
        )
        assert status == 200, (status, body[:500])
        submit.append(server_ms(headers))
        sizes.append(len(body))
    http.close()
    return {"full": full, "submit": submit, "sizes": sizes, "first": first_sizes}


# ---- 2 and 3. the API ------------------------------------------------------------------------


async def api_loop(port, users, project, *, seconds, concurrency):
    latencies: list[float] = []
    server: list[float] = []
    decided = 0
    deadline = time.perf_counter() + seconds

    async def expert(token):
        nonlocal decided
        http = Http(port, token=token)
        try:
            status, _, body = await http.request(
                "POST", f"/api/v1/projects/{project.slug}/queue/claim/"
            )
            if status == 204:
                return
            claim = json.loads(body)
            while time.perf_counter() < deadline:
                payload = json.dumps(
                    {"verdict": "accept", "claim_next": True, "idempotency_key": uuid.uuid4().hex}
                ).encode()
                t0 = time.perf_counter()
                status, headers, body = await http.request(
                    "POST",
                    f"/api/v1/items/{claim['item']['id']}/reviews/",
                    body=payload,
                    content_type="application/json",
                )
                latencies.append(time.perf_counter() - t0)
                server.append(server_ms(headers))
                assert status == 201, (status, body[:300])
                decided += 1
                claim = json.loads(body).get("next")
                if not claim:
                    return
        finally:
            http.close()

    started = time.perf_counter()
    await asyncio.gather(*(expert(t) for _, t in users[:concurrency]))
    return latencies, server, decided, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--loop-items", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--skip-page", action="store_true", help="only the API figures")
    args = parser.parse_args()
    print("Redline review benchmark", time.strftime("%Y-%m-%d %H:%M"), f"on {os.cpu_count()} cores")
    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # pages use hashed static
    port = cb.free_port()
    server = cb.start_server(port)
    try:
        project, users = prepare(args.items)
        print(f"\n{args.items:,} items, one expert, server time p50 / p95 / p99 (ms):")
        from feedback.models import Review

        before = Review.objects.filter(project=project).count()
        result = (
            {"full": [], "submit": [], "sizes": [], "first": []}
            if args.skip_page
            else asyncio.run(review_page(port, project, args.samples, page_user()))
        )
        recorded = Review.objects.filter(project=project).count() - before
        assert recorded == len(result["submit"]), (
            f"{recorded} reviews for {len(result['submit'])} submits"
        )
        if not args.skip_page:
            print(f"  review page (full GET)          {fmt(result['full'])}")
            print(f"  submit then next (htmx POST)    {fmt(result['submit'])}")
            print(
                "  bytes per item after the first page: median "
                f"{statistics.median(result['sizes']):,.0f}, max {max(result['sizes']):,} "
                f"(first page {statistics.median(result['first']):,.0f})"
            )

        lat, srv, decided, wall = asyncio.run(
            api_loop(port, users, project, seconds=args.seconds / 2, concurrency=1)
        )
        print(f"  submit then next (API)          {fmt(srv)}   ({decided} decisions)")
        print(f"  integrity: over-k / twice / reviews over k = {integrity(project)}")

        project, users = prepare(args.loop_items)
        asyncio.run(api_loop(port, users, project, seconds=2, concurrency=8))  # warm up
        updates_before = item_updates()
        before = cpu_snapshot(server)
        lat, srv, decided, wall = asyncio.run(
            api_loop(port, users, project, seconds=args.seconds, concurrency=cb.EXPERTS)
        )
        used = cpu_used(before, cpu_snapshot(server))
        print(
            f"\n{cb.EXPERTS} experts over HTTP, {args.loop_items:,} items, submit-then-next loop: "
            f"{decided / wall:.1f} decisions/s over {wall:.1f} s ({decided:,} decisions)"
        )
        per = {role: seconds / max(decided, 1) * 1e3 for role, seconds in used.items()}
        print(
            f"  CPU per decision (ms): web server {per['server']:.2f}, PostgreSQL {per['db']:.2f}, "
            f"this client {per['client']:.2f}, total "
            f"{per['server'] + per['db'] + per['client']:.2f}"
        )
        others = used["machine"] - sum(used[r] for r in ("server", "db", "client"))
        print(
            f"  other processes on the machine meanwhile: {max(others, 0) / wall:.2f} of "
            f"{os.cpu_count()} cores"
        )
        print(f"  next item as the client sees it p50 / p95 / p99 (ms): {fmt(lat, 1e3)}")
        print(f"  server time p50 / p95 / p99 (ms): {fmt(srv)}")
        print(f"  integrity: over-k / twice / reviews over k = {integrity(project)}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    time.sleep(0.5)  # the server's PostgreSQL backends exit (and send their counts) after it
    updates, hot = (a - b for a, b in zip(item_updates(), updates_before, strict=True))
    print(
        f"  item row updates during the loop: {updates:,}, of which HOT (no index entries) "
        f"{hot:,} = {hot / max(updates, 1):.0%}"
    )


if __name__ == "__main__":
    main()
