"""Kubernetes names for MLflow model names: valid, short enough, stable, collision-free."""

from __future__ import annotations

import pytest

from bridge.names import MAX_NAME_LENGTH, is_dns1035_label, k8s_name

ODD = [
    "Fraud Model v2.1 (EU)",
    "team.churn_model",
    "Churn_Model",
    "churn.model",
    "123-numbers-first",
    "___",
    "ünïcødé-模型",
    "a" * 200,
    "x-" * 40,
    "model-",
]


@pytest.mark.parametrize("name", ODD)
def test_odd_names_become_valid_labels(name):
    k = k8s_name(name)
    assert is_dns1035_label(k, MAX_NAME_LENGTH), k
    assert k8s_name(name) == k  # deterministic


def test_valid_names_are_kept_and_others_never_collide():
    assert k8s_name("iris-classifier") == "iris-classifier"
    names = {k8s_name(n) for n in ODD}
    assert len(names) == len(ODD)
    assert k8s_name("Churn_Model") != k8s_name("churn.model")
    assert k8s_name("a" * 200) != k8s_name("a" * 201)
