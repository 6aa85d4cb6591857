"""Export a built dataset version as Hugging Face ``datasets`` folders."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from training.models import DatasetStatus, DatasetVersion
from training.selectors import version_dir


class Command(BaseCommand):
    help = (
        "Write a built dataset version as one Hugging Face DatasetDict per kind "
        "(<dir>/<kind>/, splits train and eval, saved with save_to_disk) plus its manifest. "
        "Needs the `datasets` package (pip install redline[train])."
    )

    def add_arguments(self, parser):
        parser.add_argument("version", type=int, help="the dataset version's id")
        parser.add_argument("directory", help="where to write (must be empty or absent)")
        parser.add_argument("--format", choices=["hf"], default="hf")

    def handle(self, *args, version, directory, format, **options):
        try:
            import datasets
        except ImportError:
            raise CommandError(
                "export_dataset needs the `datasets` package: pip install 'redline[train]'."
            ) from None
        obj = DatasetVersion.objects.filter(pk=version).first()
        if obj is None:
            raise CommandError(f"No dataset version {version}.")
        if obj.status != DatasetStatus.SUCCEEDED:
            raise CommandError(
                f"Version {version} is {obj.get_status_display().lower()}, not built."
            )
        target = Path(directory)
        if target.exists() and any(target.iterdir()):
            raise CommandError(f"{target} is not empty.")
        source = version_dir(obj)
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as cache:
            for kind in obj.kinds:
                files = {
                    entry["split"]: str(source / entry["name"])
                    for entry in obj.files
                    if entry["kind"] == kind
                }
                if not files:
                    continue
                loaded = datasets.load_dataset("json", data_files=files, cache_dir=cache)
                loaded.save_to_disk(str(target / kind))
                sizes = ", ".join(f"{split} {len(ds):,}" for split, ds in loaded.items())
                self.stdout.write(f"{kind}: {sizes} → {target / kind}")
        shutil.copyfile(source / "manifest.json", target / "manifest.json")
        self.stdout.write(self.style.SUCCESS(f"Version {version} exported to {target}."))
