"""The optional Server-Timing header."""

from __future__ import annotations

import re

from tests.redline.subprocess_env import run_django

CODE = (
    "from django.test import Client\n"
    "r = Client().get('/healthz')\n"
    "print(r.headers.get('Server-Timing', 'none'))\n"
)


def test_server_timing_header_is_added_only_when_asked():
    off = run_django(CODE, REDLINE_SERVER_TIMING="0")
    assert off.returncode == 0, off.stderr
    assert off.stdout.strip().splitlines()[-1] == "none"
    on = run_django(CODE, REDLINE_SERVER_TIMING="1")
    assert on.returncode == 0, on.stderr
    assert re.fullmatch(r"app;dur=\d+\.\d\d", on.stdout.strip().splitlines()[-1]), on.stdout
