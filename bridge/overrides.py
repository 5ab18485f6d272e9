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
from decimal import Decimal

from bridge.errors import CheckFailed
from bridge.keys import (
    HISTORY_TAG,
    LOCK_TAG,
    ROLLOUT_BAKE_TAG,
    ROLLOUT_STEPS_TAG,
    ROLLOUT_TAG,
    TAG_PREFIX,
)

# Tags bridge writes for its own bookkeeping (promotion history, lock, rollout state and
# plan) share the namespace with the serving overrides below but are not overrides.
BOOKKEEPING_TAGS = frozenset(
    {HISTORY_TAG, LOCK_TAG, ROLLOUT_TAG, ROLLOUT_STEPS_TAG, ROLLOUT_BAKE_TAG}
)
# KServe's names (pkg/constants/constants.go, DeploymentModeType): current ones, and the
# deprecated ones (< 0.17) accepted as input and emitted as their current name.
DEPLOYMENT_MODES = ("Standard", "Knative")
LEGACY_DEPLOYMENT_MODES = {"RawDeployment": "Standard", "Serverless": "Knative"}

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
    deployment_mode: str | None = None  # None: no annotation, the cluster's default applies
    runtime: str | None = None  # None: KServe auto-selects a runtime for modelFormat mlflow
    min_replicas: int = 1
    max_replicas: int = 3
    cpu: str = "1"
    memory: str = "2Gi"
    gpu: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    canary_traffic_percent: int = 10


@dataclass(frozen=True)
class ServingLimits:
    """What a model's tags may ask for (settings ``BRIDGE_ALLOWED_NAMESPACES`` and
    ``BRIDGE_TAG_MAX_*``): tags are written by whoever may edit a registered model, so
    they must not place a model in any namespace or size it without limit."""

    namespaces: frozenset[str]
    max_replicas: int
    max_cpu: str
    max_memory: str
    max_gpu: int


# The setting that sets each bound, for the message that names it.
LIMIT_SETTINGS = {
    "namespace": "BRIDGE_ALLOWED_NAMESPACES",
    "replicas": "BRIDGE_TAG_MAX_REPLICAS",
    "cpu": "BRIDGE_TAG_MAX_CPU",
    "memory": "BRIDGE_TAG_MAX_MEMORY",
    "gpu": "BRIDGE_TAG_MAX_GPU",
}

# Kubernetes resource.Quantity suffixes (k8s.io/apimachinery/pkg/api/resource).
_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def quantity_value(value: str) -> Decimal:
    """The number a Kubernetes quantity stands for: ``500m`` -> 0.5, ``1Gi`` -> 1073741824."""
    m = _QUANTITY.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    suffix = m.group("suffix") or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return Decimal(m.group("num")) * Decimal(10) ** int(suffix[1:])
    return Decimal(m.group("num")) * _SUFFIX[suffix]


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


def deployment_mode(value: str) -> str:
    """KServe's current name of a deployment mode, given either name in any case."""
    for mode in DEPLOYMENT_MODES:
        if value.lower() == mode.lower():
            return mode
    for legacy, mode in LEGACY_DEPLOYMENT_MODES.items():
        if value.lower() == legacy.lower():
            return mode
    names = [*DEPLOYMENT_MODES, *LEGACY_DEPLOYMENT_MODES]
    raise ValueError(f"expected one of: {', '.join(names)}")


def _namespace(value: str) -> str:
    if not is_dns1123_label(value):
        raise ValueError("expected a Kubernetes namespace name (lower-case DNS-1123 label)")
    return value


# tag (without the prefix) -> (ServingSpec field, parser, documentation)
TAGS: dict[str, tuple[str, object, str]] = {
    "min-replicas": (
        "min_replicas",
        _int(0),
        "Minimum predictor replicas (0 = scale to zero, Knative only).",
    ),
    "max-replicas": ("max_replicas", _int(1), "Maximum predictor replicas (>= min-replicas)."),
    "cpu": ("cpu", _quantity, "CPU request and limit, e.g. 500m or 2."),
    "memory": ("memory", _quantity, "Memory request and limit, e.g. 512Mi or 4Gi."),
    "gpu": ("gpu", _int(0), "GPUs per replica (request and limit of the GPU resource)."),
    "runtime": ("runtime", None, "ServingRuntime name; must be one of the known runtimes."),
    "deployment-mode": (
        "deployment_mode",
        deployment_mode,
        "Standard or Knative (RawDeployment / Serverless accepted, emitted as the new names).",
    ),
    "namespace": ("namespace", _namespace, "Namespace of this model's InferenceService."),
    "canary-traffic-percent": (
        "canary_traffic_percent",
        _int(0, 100),
        "Percent of traffic to the canary, 0-100.",
    ),
}


def resolve(
    model: str,
    tags: dict[str, str],
    defaults: ServingSpec,
    runtimes: dict[str, tuple[str, ...]],
    limits: ServingLimits | None = None,
) -> ServingSpec:
    """``defaults`` with the model's ``bridge.*`` tags applied, every value validated
    and, given ``limits``, held within them."""
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
    if spec.min_replicas == 0 and spec.deployment_mode == "Standard":
        raise CheckFailed(
            f"model {model!r}: min-replicas 0 (scale to zero) needs Knative mode, not Standard",
            hint=f"set {TAG_PREFIX}min-replicas to 1 or more",
        )
    if limits is not None:
        check_limits(model, spec, limits)
    return spec


def check_limits(model: str, spec: ServingSpec, limits: ServingLimits) -> None:
    """Refuse a spec outside ``limits``, naming the tag, the bound and its setting."""
    if spec.namespace not in limits.namespaces:
        raise CheckFailed(
            f"model {model!r}: tag '{TAG_PREFIX}namespace' asks for namespace "
            f"{spec.namespace!r}, which is not allowed (allowed: "
            f"{', '.join(sorted(limits.namespaces))}; {LIMIT_SETTINGS['namespace']})",
            hint=f"fix the tag, or add the namespace to {LIMIT_SETTINGS['namespace']}",
        )
    over = [
        ("max-replicas", spec.max_replicas, limits.max_replicas, "replicas"),
        ("min-replicas", spec.min_replicas, limits.max_replicas, "replicas"),
        ("gpu", spec.gpu, limits.max_gpu, "gpu"),
    ]
    for tag, asked, bound, key in over:
        if asked > bound:
            _above(model, tag, str(asked), str(bound), key)
    for tag, asked, bound in (
        ("cpu", spec.cpu, limits.max_cpu),
        ("memory", spec.memory, limits.max_memory),
    ):
        if quantity_value(asked) > quantity_value(bound):
            _above(model, tag, asked, bound, tag)


def _above(model: str, tag: str, asked: str, bound: str, key: str) -> None:
    setting = LIMIT_SETTINGS[key]
    raise CheckFailed(
        f"model {model!r}: tag '{TAG_PREFIX}{tag}' asks for {asked}, above the bound {bound} "
        f"({setting})",
        hint=f"lower the tag, or raise {setting}",
    )


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
