"""A real Label Studio server for the tests marked ``labelstudio`` (never a mock).

Label Studio lives in its own virtualenv (``make labelstudio`` or
``tests/labelstudio/ensure_labelstudio.sh``; default ``.cache/labelstudio-venv``, or
``LABEL_STUDIO_VENV``). The session fixture starts it on 127.0.0.1 (port
``LABEL_STUDIO_TEST_PORT``, default 18160) with SQLite in a temporary folder and the version
check off, creates an admin and an annotator offline (``label-studio init`` with
``--user-token``: no browser, no signup), and stops it at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180


@dataclass(frozen=True)
class LabelStudioServer:
    url: str
    admin_email: str
    admin_token: str
    annotator_email: str
    annotator_token: str

    def client(self, token: str):
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=token, timeout=60)


def _env(data_dir: Path) -> dict[str, str]:
    # Nothing of Redline's own configuration leaks into Label Studio's Django.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "REDLINE_", "CELERY_", "DATABASE_", "LABEL_STUDIO_"))
    }
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        DJANGO_DB="sqlite",
        LATEST_VERSION_CHECK="false",
        SSRF_PROTECTION_ENABLED="false",  # it calls Redline's webhook on 127.0.0.1
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="false",
    )
    return env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:  # noqa: S310
            return answer.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> LabelStudioServer:
    venv = Path(os.environ.get("LABEL_STUDIO_VENV", ROOT / ".cache" / "labelstudio-venv"))
    exe = venv / "bin" / "label-studio"
    if not exe.exists():
        pytest.fail(f"Label Studio is not installed in {venv}: run `make labelstudio`.")
    port = int(os.environ.get("LABEL_STUDIO_TEST_PORT", "18160"))
    url = f"http://127.0.0.1:{port}"
    if _healthy(url):
        pytest.fail(f"Something already answers on {url}; set LABEL_STUDIO_TEST_PORT.")
    data = tmp_path_factory.mktemp("labelstudio")
    env = _env(data)
    server = LabelStudioServer(
        url=url,
        admin_email="ls-admin@example.org",
        admin_token="a" * 8 + "0123456789abcdef0123456789abcdef",
        annotator_email="ls-annotator@example.org",
        annotator_token="b" * 8 + "0123456789abcdef0123456789abcdef",
    )
    log = open(data / "server.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(  # noqa: S603
        [
            str(exe),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(port),
            "--username",
            server.admin_email,
            "--password",
            "admin-password-123",
            "--user-token",
            server.admin_token,
            "--enable-legacy-api-token",
        ],
        env=env,
        cwd=data,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (data / "server.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"Label Studio did not start on {url}:\n{tail}")
            time.sleep(0.5)
        # A second user of the same organization, with a known token, made offline.
        subprocess.run(  # noqa: S603
            [
                str(exe),
                "init",
                "--quiet",
                "--username",
                server.annotator_email,
                "--password",
                "annotator-password-123",
                "--user-token",
                server.annotator_token,
            ],
            env=env,
            cwd=data,
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield server
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
