"""bridge.* registered-model tags: every value validated, errors name model, tag and value."""

from __future__ import annotations

import pytest

from bridge.errors import CheckFailed, UsageError
from bridge.overrides import TAGS, ServingSpec, is_quantity, parse_runtimes, resolve
from bridge.settings import load_settings

RUNTIMES = {"kserve-mlserver": ("1", "2"), "custom-mlflow": ("2",)}
DEFAULTS = ServingSpec(namespace="models")


def test_every_documented_tag_applies():
    tags = {
        "bridge.min-replicas": "2",
        "bridge.max-replicas": "8",
        "bridge.cpu": "500m",
        "bridge.memory": "1.5Gi",
        "bridge.gpu": "1",
        "bridge.runtime": "custom-mlflow",
        "bridge.deployment-mode": "rawdeployment",
        "bridge.namespace": "team-a",
        "bridge.canary-traffic-percent": "25",
        "owner": "not a bridge tag, ignored",
    }
    spec = resolve("m", tags, DEFAULTS, RUNTIMES)
    assert spec == ServingSpec(
        namespace="team-a",
        deployment_mode="Standard",
        runtime="custom-mlflow",
        min_replicas=2,
        max_replicas=8,
        cpu="500m",
        memory="1.5Gi",
        gpu=1,
        canary_traffic_percent=25,
    )
    assert {f"bridge.{k}" for k in TAGS} <= set(tags)


def test_no_tags_keep_the_defaults():
    assert resolve("m", {}, DEFAULTS, RUNTIMES) == DEFAULTS


@pytest.mark.parametrize(
    "tag,value,why",
    [
        ("bridge.min-replicas", "-1", "expected a whole number >= 0"),
        ("bridge.max-replicas", "0", "expected a whole number >= 1"),
        ("bridge.max-replicas", "two", "expected a whole number"),
        ("bridge.gpu", "1.5", "expected a whole number"),
        ("bridge.cpu", "2 cores", "positive Kubernetes quantity"),
        ("bridge.memory", "4GB", "positive Kubernetes quantity"),
        ("bridge.memory", "-1Gi", "positive Kubernetes quantity"),
        ("bridge.cpu", "0", "positive Kubernetes quantity"),
        ("bridge.runtime", "triton", "unknown runtime; known: custom-mlflow, kserve-mlserver"),
        (
            "bridge.deployment-mode",
            "ModelMesh",
            "expected one of: Standard, Knative, RawDeployment, Serverless",
        ),
        ("bridge.namespace", "Team_A", "namespace name"),
        ("bridge.canary-traffic-percent", "150", "from 0 to 100"),
    ],
)
def test_bad_values_name_model_tag_and_value(tag, value, why):
    with pytest.raises(CheckFailed) as err:
        resolve("fraud-model", {tag: value}, DEFAULTS, RUNTIMES)
    line = err.value.one_line()
    assert f"model 'fraud-model': tag {tag!r} has invalid value {value!r}" in line
    assert why in line
    assert err.value.exit_code == 1


def test_unknown_bridge_tag_is_an_error_with_the_known_list():
    with pytest.raises(CheckFailed) as err:
        resolve("m", {"bridge.min-replica": "2"}, DEFAULTS, RUNTIMES)
    assert "unknown tag 'bridge.min-replica'" in err.value.one_line()
    assert "bridge.min-replicas" in err.value.one_line()


def test_max_below_min_and_scale_to_zero_in_raw_mode():
    with pytest.raises(CheckFailed, match="max-replicas 2 is below min-replicas 3"):
        resolve("m", {"bridge.min-replicas": "3", "bridge.max-replicas": "2"}, DEFAULTS, RUNTIMES)
    with pytest.raises(CheckFailed, match="needs Knative mode"):
        resolve(
            "m",
            {"bridge.min-replicas": "0", "bridge.deployment-mode": "RawDeployment"},
            DEFAULTS,
            RUNTIMES,
        )


@pytest.mark.parametrize(
    "value", ["1", "500m", "0.5", "1.5Gi", "512Mi", "2Ti", "100k", "1e3", "1E-2", ".5", "4G"]
)
def test_quantities_kubernetes_accepts(value):
    from kubernetes.utils.quantity import parse_quantity

    assert is_quantity(value)
    assert parse_quantity(value) > 0  # the Kubernetes client agrees


@pytest.mark.parametrize(
    "value", ["", "0", "0m", "-1", "1.5 Gi", "1GB", "1gi", "Gi", "1..5", "abc"]
)
def test_quantities_refused(value):
    assert not is_quantity(value)


def test_parse_runtimes():
    assert parse_runtimes("kserve-mlserver=1,2; my-rt=2") == {
        "kserve-mlserver": ("1", "2"),
        "my-rt": ("2",),
    }
    for bad in ("", "kserve-mlserver", "Bad_Name=1", "x="):
        with pytest.raises(ValueError):
            parse_runtimes(bad)


@pytest.mark.parametrize(
    "env,message",
    [
        ({"BRIDGE_CPU": "lots"}, "cpu 'lots' is not a positive Kubernetes quantity"),
        ({"BRIDGE_DEPLOYMENT_MODE": "Raw"}, "deployment mode 'Raw'"),
        ({"BRIDGE_RUNTIME": "triton"}, "runtime 'triton' is not a known runtime"),
        ({"BRIDGE_MIN_REPLICAS": "4", "BRIDGE_MAX_REPLICAS": "2"}, "max replicas 2"),
        ({"BRIDGE_CANARY_TRAFFIC_PERCENT": "101"}, "above 100"),
        ({"BRIDGE_RUNTIME_FIT": "maybe"}, "runtime fit 'maybe'"),
        ({"BRIDGE_RUNTIME_PACKAGES": "numpy>=1"}, "invalid runtime setting"),
        ({"BRIDGE_DRY_RUN": "true"}, "--dry-run only applies to --apply"),
        ({"BRIDGE_GPU_RESOURCE": "nvidia gpu"}, "gpu resource"),
    ],
)
def test_serving_settings_are_validated(env, message):
    with pytest.raises(UsageError) as err:
        load_settings(env=env)
    assert message in err.value.one_line()


def test_dry_run_flag_needs_apply(capsys):
    from bridge.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["sync", "--once", "--dry-run"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --dry-run only applies to --apply (add --apply, or drop --dry-run)"]


def test_bookkeeping_tags_written_by_promote_are_not_overrides():
    """`bridge promote` writes bridge.history and bridge.lock; sync must not refuse them."""
    from bridge.keys import HISTORY_TAG, LOCK_TAG
    from bridge.overrides import ServingSpec, resolve

    spec = resolve(
        "m",
        {HISTORY_TAG: '{"entries": []}', LOCK_TAG: "token", "bridge.min-replicas": "2"},
        ServingSpec(namespace="models"),
        {"kserve-mlserver": ("1", "2")},
    )
    assert spec.min_replicas == 2


def _limits(**kw):
    from bridge.overrides import ServingLimits

    base = dict(
        namespaces=frozenset({"models"}),
        max_replicas=10,
        max_cpu="8",
        max_memory="32Gi",
        max_gpu=1,
    )
    return ServingLimits(**{**base, **kw})


@pytest.mark.parametrize(
    "tag,value,line",
    [
        (
            "bridge.namespace",
            "kube-system",
            "asks for namespace 'kube-system', which is not allowed",
        ),
        ("bridge.max-replicas", "11", "asks for 11, above the bound 10 (BRIDGE_TAG_MAX_REPLICAS)"),
        ("bridge.min-replicas", "12", "asks for 12, above the bound 10 (BRIDGE_TAG_MAX_REPLICAS)"),
        ("bridge.cpu", "8001m", "asks for 8001m, above the bound 8 (BRIDGE_TAG_MAX_CPU)"),
        ("bridge.memory", "33Gi", "asks for 33Gi, above the bound 32Gi (BRIDGE_TAG_MAX_MEMORY)"),
        ("bridge.memory", "40G", "asks for 40G, above the bound 32Gi (BRIDGE_TAG_MAX_MEMORY)"),
        ("bridge.gpu", "2", "asks for 2, above the bound 1 (BRIDGE_TAG_MAX_GPU)"),
    ],
)
def test_tags_beyond_the_bounds_are_refused_naming_the_setting(tag, value, line):
    tags = {tag: value}
    if tag == "bridge.min-replicas":
        tags["bridge.max-replicas"] = "12"
    with pytest.raises(CheckFailed) as err:
        resolve("m", tags, DEFAULTS, RUNTIMES, _limits())
    assert line in err.value.one_line()
    assert err.value.one_line().startswith("model 'm': tag ")


def test_tags_within_the_bounds_and_allowed_namespaces_apply():
    tags = {
        "bridge.namespace": "team-a",
        "bridge.max-replicas": "10",
        "bridge.cpu": "8000m",
        "bridge.memory": "34359738368",  # 32Gi in bytes
        "bridge.gpu": "1",
    }
    spec = resolve(
        "m", tags, DEFAULTS, RUNTIMES, _limits(namespaces=frozenset({"models", "team-a"}))
    )
    assert (spec.namespace, spec.max_replicas, spec.gpu) == ("team-a", 10, 1)


@pytest.mark.parametrize(
    "value,number",
    [("500m", "0.5"), ("2", "2"), ("1Gi", "1073741824"), ("1.5G", "1500000000"), ("1e3", "1000")],
)
def test_quantity_values(value, number):
    from decimal import Decimal

    from bridge.overrides import quantity_value

    assert quantity_value(value) == Decimal(number)


def test_allowed_namespaces_default_to_bridge_namespace_only():
    from bridge.sync import serving_limits

    assert serving_limits(load_settings(env={"BRIDGE_NAMESPACE": "models"})).namespaces == {
        "models"
    }
    limits = serving_limits(
        load_settings(env={"BRIDGE_NAMESPACE": "models", "BRIDGE_ALLOWED_NAMESPACES": "a, b"})
    )
    assert limits.namespaces == {"models", "a", "b"}


@pytest.mark.parametrize(
    "env,message",
    [
        ({"BRIDGE_ALLOWED_NAMESPACES": "ok,Not_OK"}, "allowed namespace 'Not_OK'"),
        ({"BRIDGE_TAG_MAX_CPU": "lots"}, "tag_max_cpu 'lots' is not a positive"),
        ({"BRIDGE_CPU": "16"}, "default cpu 16 is above the bound in BRIDGE_TAG_MAX_CPU"),
        ({"BRIDGE_MAX_REPLICAS": "20"}, "default max_replicas 20 is above the bound"),
        ({"BRIDGE_GPU": "2"}, "default gpu 2 is above the bound in BRIDGE_TAG_MAX_GPU"),
    ],
)
def test_bad_bounds_are_usage_errors(env, message):
    with pytest.raises(UsageError) as err:
        load_settings(env=env)
    assert message in err.value.one_line()
