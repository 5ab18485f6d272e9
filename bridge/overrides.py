"""Per-model serving settings: defaults from Settings, overridden by ``bridge.*`` tags (pure).

A registered model's tags in the ``bridge.`` namespace override the serving
defaults for that model only. Every value is validated here; a bad one is a
:class:`~bridge.errors.CheckFailed` naming the model, the tag and the value, so
that model is skipped while the others still sync. See docs/serving.md for the
reference table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from bridge.errors import CheckFailed

TAG_PREFIX = "bridge."
# Tags bridge writes for its own bookkeeping (promotion history and lock); they share
# the namespace with the serving overrides below but are not overrides.
HISTORY_TAG = TAG_PREFIX + "history"
LOCK_TAG = TAG_PREFIX + "lock"
# The rollout's state and its per-model plan are read by bridge.rollout_driver, not here.
ROLLOUT_TAG = TAG_PREFIX + "rollout"
ROLLOUT_STEPS_TAG = TAG_PREFIX + "rollout-steps"
ROLLOUT_BAKE_TAG = TAG_PREFIX + "rollout-bake"
BOOKKEEPING_TAGS = frozenset(
    {HISTORY_TAG, LOCK_TAG, ROLLOUT_TAG, ROLLOUT_STEPS_TAG, ROLLOUT_BAKE_TAG}
)
DEPLOYMENT_MODES = ("Serverless", "RawDeployment")

# Kubernetes resource.Quantity: a decimal number with an optional binary (Ki..Ei),
# decimal (m, k, M..E) or exponent suffix. Bridge only accepts values above zero.
_QUANTITY = re.compile(
    r"^(?P<num>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_RESOURCE_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


@dataclass(frozen=True)
class ServingSpec:
    """How one model is served: the defaults with its tag overrides applied."""

    namespace: str
    deployment_mode: str = "Serverless"
    runtime: str | None = None  # None: KServe auto-selects a runtime for modelFormat mlflow
    min_replicas: int = 1
    max_replicas: int = 3
    cpu: str = "1"
    memory: str = "2Gi"
    gpu: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    canary_traffic_percent: int = 10


def is_quantity(value: str) -> bool:
    """A positive Kubernetes quantity such as ``500m``, ``2``, ``1.5Gi``, ``1e3``."""
    m = _QUANTITY.match(value)
    return bool(m) and float(m.group("num") or 0) > 0


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1123_LABEL.match(value))


def is_resource_name(value: str) -> bool:
    """An extended resource name such as ``nvidia.com/gpu`` or ``amd.com/gpu``."""
    return len(value) <= 253 and bool(_RESOURCE_NAME.match(value))


def _int(lo: int, hi: int | None = None):
    def parse(value: str) -> int:
        if not re.fullmatch(r"[+-]?[0-9]+", value.strip()):
            raise ValueError("expected a whole number")
        n = int(value)
        if n < lo or (hi is not None and n > hi):
            raise ValueError(
                f"expected a whole number from {lo} to {hi}"
                if hi
                else f"expected a whole number >= {lo}"
            )
        return n

    return parse


def _quantity(value: str) -> str:
    if not is_quantity(value):
        raise ValueError("expected a positive Kubernetes quantity such as 500m, 2, 512Mi, 4Gi")
    return value


def _mode(value: str) -> str:
    for mode in DEPLOYMENT_MODES:
        if value.lower() == mode.lower():
            return mode
    raise ValueError(f"expected one of: {', '.join(DEPLOYMENT_MODES)}")


def _namespace(value: str) -> str:
    if not is_dns1123_label(value):
        raise ValueError("expected a Kubernetes namespace name (lower-case DNS-1123 label)")
    return value


# tag (without the prefix) -> (ServingSpec field, parser, documentation)
TAGS: dict[str, tuple[str, object, str]] = {
    "min-replicas": (
        "min_replicas",
        _int(0),
        "Minimum predictor replicas (0 = scale to zero, Serverless only).",
    ),
    "max-replicas": ("max_replicas", _int(1), "Maximum predictor replicas (>= min-replicas)."),
    "cpu": ("cpu", _quantity, "CPU request and limit, e.g. 500m or 2."),
    "memory": ("memory", _quantity, "Memory request and limit, e.g. 512Mi or 4Gi."),
    "gpu": ("gpu", _int(0), "GPUs per replica (request and limit of the GPU resource)."),
    "runtime": ("runtime", None, "ServingRuntime name; must be one of the known runtimes."),
    "deployment-mode": ("deployment_mode", _mode, "Serverless or RawDeployment."),
    "namespace": ("namespace", _namespace, "Namespace of this model's InferenceService."),
    "canary-traffic-percent": (
        "canary_traffic_percent",
        _int(0, 100),
        "Percent of traffic to the canary, 0-100.",
    ),
}


def resolve(
    model: str, tags: dict[str, str], defaults: ServingSpec, runtimes: dict[str, tuple[str, ...]]
) -> ServingSpec:
    """``defaults`` with the model's ``bridge.*`` tags applied, every value validated."""
    changes: dict[str, object] = {}
    for tag in sorted(tags):
        if not tag.startswith(TAG_PREFIX) or tag in BOOKKEEPING_TAGS:
            continue
        key, raw = tag[len(TAG_PREFIX) :], str(tags[tag]).strip()
        if key not in TAGS:
            raise CheckFailed(
                f"model {model!r}: unknown tag {tag!r} (value {tags[tag]!r})",
                hint=f"known bridge tags: {', '.join(TAG_PREFIX + k for k in sorted(TAGS))}",
            )
        field_name, parse, _doc = TAGS[key]
        try:
            if key == "runtime":
                value: object = _runtime(raw, runtimes)
            else:
                value = parse(raw)  # type: ignore[operator]
        except ValueError as exc:
            raise CheckFailed(
                f"model {model!r}: tag {tag!r} has invalid value {tags[tag]!r}: {exc}",
                hint="fix or delete the tag on the registered model",
            ) from None
        changes[field_name] = value
    spec = replace(defaults, **changes)
    if spec.max_replicas < spec.min_replicas:
        raise CheckFailed(
            f"model {model!r}: max-replicas {spec.max_replicas} is below min-replicas {spec.min_replicas}",
            hint=f"fix the {TAG_PREFIX}min-replicas / {TAG_PREFIX}max-replicas tags",
        )
    if spec.min_replicas == 0 and spec.deployment_mode == "RawDeployment":
        raise CheckFailed(
            f"model {model!r}: min-replicas 0 (scale to zero) needs Serverless mode, not RawDeployment",
            hint=f"set {TAG_PREFIX}min-replicas to 1 or more",
        )
    return spec


def _runtime(value: str, runtimes: dict[str, tuple[str, ...]]) -> str:
    if value not in runtimes:
        raise ValueError(
            f"unknown runtime; known: {', '.join(sorted(runtimes))} (add others with BRIDGE_RUNTIMES)"
        )
    return value


def parse_runtimes(value: str) -> dict[str, tuple[str, ...]]:
    """``"kserve-mlserver=1,2;my-runtime=2"`` -> runtime name -> supported mlflow format versions."""
    runtimes: dict[str, tuple[str, ...]] = {}
    for entry in value.split(";"):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, versions = entry.partition("=")
        name = name.strip()
        vs = tuple(v.strip() for v in versions.split(",") if v.strip())
        if not sep or not is_dns1123_label(name) or not vs:
            raise ValueError(
                f"{entry!r} is not NAME=VERSION[,VERSION...] (e.g. kserve-mlserver=1,2)"
            )
        runtimes[name] = vs
    if not runtimes:
        raise ValueError("no runtime listed")
    return runtimes
