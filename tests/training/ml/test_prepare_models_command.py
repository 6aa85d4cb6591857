"""`manage.py prepare_models`: builds into STORAGE_DIR/models/<name>/, skips what is there."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_prepare_models_builds_tiny_once_and_rebuilds_with_force(settings, tmp_path):
    settings.STORAGE_DIR = tmp_path / "storage"
    out = io.StringIO()
    call_command("prepare_models", "tiny", stdout=out)
    folder = tmp_path / "storage" / "models" / "tiny"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert "254,272 parameters" in out.getvalue()
    assert "registered as base model 'tiny'" in out.getvalue()
    mtime = (folder / "model.safetensors").stat().st_mtime_ns

    out = io.StringIO()
    call_command("prepare_models", "tiny", stdout=out)
    assert "already in" in out.getvalue()
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime

    call_command("prepare_models", "tiny", "--force", stdout=io.StringIO())
    assert (folder / "model.safetensors").stat().st_mtime_ns != mtime
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny"]  # nothing left beside it
