"""Run a snippet in a fresh interpreter with a modified environment (settings are read once)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_django(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "redline.settings", **env}
    for key, value in env.items():
        if value is None:
            full_env.pop(key, None)
    program = "import django; django.setup()\n" + code
    return subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
