"""Kubeflow Pipelines v2 components that log to MLflow, register, gate, promote and deploy.

Each ``<name>/component.py`` is thin and calls :mod:`bridge.kfp_ops`; the compiled
``<name>/component.yaml`` next to it is what a pipeline loads. Regenerate them
with ``make components``.
"""
