"""Kubernetes names for MLflow registered models (pure).

MLflow allows almost any name ("Fraud Model v2", "team.churn_model"); Kubernetes
and KServe need DNS-1035 labels. The mapping is deterministic and
collision-free: a name that is already a valid label is kept as it is; any
other name is lower-cased, cleaned and given a short stable hash of the
original, so "Churn_Model" and "churn.model" never meet.
"""

from __future__ import annotations

import hashlib
import re

# KServe (serverless) derives "<name>-predictor-<namespace>" host labels and
# Knative revision names from the InferenceService name; 45 leaves room for both.
MAX_NAME_LENGTH = 45
_HASH_LEN = 8
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def is_dns1035_label(name: str, max_length: int = 63) -> bool:
    return len(name) <= max_length and bool(_DNS1035.match(name))


def short_hash(text: str, length: int = _HASH_LEN) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def k8s_name(model_name: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """Stable DNS-1035 label for ``model_name``."""
    if is_dns1035_label(model_name, max_length):
        return model_name
    base = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-")
    if not base or not base[0].isalpha():
        base = ("m-" + base).rstrip("-")
    base = base[: max_length - _HASH_LEN - 1].rstrip("-")
    return f"{base}-{short_hash(model_name)}"
