"""Writes for training: dataset versions (``datasets``), their parameters (``params``),
from decisions to rows (``mapping``) and the files they are written to (``writer``)."""

from training.services.datasets import (
    BuildRefused,
    dataset_version_build,
    dataset_version_delete,
    dataset_version_request,
)
from training.services.params import params_clean

__all__ = [
    "BuildRefused",
    "dataset_version_build",
    "dataset_version_delete",
    "dataset_version_request",
    "params_clean",
]
