"""Redline's machine-learning core: base models, training settings, LoRA training, generation.

Plain library code with no Django models, called by the `training` app's services and Celery
tasks. Nothing here may import torch, transformers, peft, trl or datasets at module level: the
web process imports `training.ml.config` (to validate and describe settings) and
`training.ml.models` (for `BaseModelError` and parameter counts) without the training stack.
Heavy imports live inside the functions that train, load or generate.
"""
