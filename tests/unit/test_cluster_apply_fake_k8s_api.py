"""Apply and prune against a local HTTP fake of the Kubernetes API (no real cluster here)."""

from __future__ import annotations

import pytest

from bridge.cluster import reconcile_cluster
from bridge.errors import CheckFailed, PermanentError, UsageError
from bridge.keys import MANAGED_BY
from bridge.kube import FIELD_MANAGER, INFERENCE_SERVICE, KubeClient, load_api_client
from bridge.overrides import ServingSpec
from bridge.serving import (
    DesiredService,
    ServedVersion,
    ServingOptions,
    inference_service,
    service_account,
)

pytestmark = pytest.mark.fake_k8s_api

OPTS = ServingOptions(
    namespace="models",
    service_account="mlflow-bridge-models",
    s3_endpoint_url="http://minio.minio.svc:9000",
)


def isvc(name: str, ns: str = "models", version: str = "1") -> dict:
    v = ServedVersion(
        version, f"s3://b/{name}/{version}/", "sha256:ab", "r1", "mlflow-artifacts:/x"
    )
    return inference_service(
        DesiredService(name, name, "champion", v, ServingSpec(namespace=ns)), OPTS
    )


def foreign(name: str, ns: str = "models", kind: str = "InferenceService") -> dict:
    api = "serving.kserve.io/v1beta1" if kind == "InferenceService" else "v1"
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": name, "namespace": ns, "labels": {"team": "other"}},
    }


def client(k8s_api) -> KubeClient:
    return KubeClient(load_api_client(str(k8s_api.kubeconfig), "fake"))


def run(k8s_api, desired, *, keep=(), in_scope=lambda _n: True, force=True, dry_run="none"):
    return reconcile_cluster(
        client(k8s_api),
        desired,
        namespaces={"models"},
        keep=set(keep),
        in_scope=in_scope,
        force=force,
        dry_run=dry_run,
    )


def test_apply_sends_server_side_apply_patches_fake_k8s_api(k8s_api):
    desired = [service_account(OPTS, "models"), isvc("iris"), isvc("wine")]
    change = run(k8s_api, desired)
    assert not change.errors
    patches = k8s_api.requests("PATCH")
    assert [r.path for r in patches] == [
        "/api/v1/namespaces/models/serviceaccounts/mlflow-bridge-models",
        "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/iris",
        "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/wine",
    ]
    for r in patches:
        assert r.content_type == "application/apply-patch+yaml"
        assert r.query["fieldManager"] == FIELD_MANAGER == MANAGED_BY
        assert r.query["force"] == "true"
        assert "dryRun" not in r.query
        assert r.authorization.startswith("Bearer ")
    assert patches[1].body == desired[1]
    assert len(k8s_api.objects("InferenceService")) == 2
    assert change.applied == [
        "ServiceAccount/models/mlflow-bridge-models",
        "InferenceService/models/iris",
        "InferenceService/models/wine",
    ]
    # Listing for prune goes by bridge's label only.
    [listing] = [r for r in k8s_api.requests("GET") if r.path.endswith("/inferenceservices")]
    assert listing.query["labelSelector"] == f"app.kubernetes.io/managed-by={MANAGED_BY}"


def test_prune_deletes_exactly_the_stale_owned_objects_fake_k8s_api(k8s_api):
    k8s_api.seed(
        isvc("iris"),  # still desired
        isvc("stale"),  # owned, no longer desired -> deleted
        isvc("failed-this-pass"),  # owned, its model failed -> kept
        isvc("out-of-scope"),  # owned, not in this pass's --model scope -> kept
        foreign("hand-made"),  # not bridge's -> never touched
        isvc("elsewhere", ns="other"),  # owned, in a namespace this pass does not serve
    )
    change = run(
        k8s_api,
        [isvc("iris", version="2")],
        keep={"failed-this-pass"},
        in_scope=lambda name: name != "out-of-scope",
    )
    assert not change.errors
    assert change.pruned == ["InferenceService/models/stale"]
    deletes = k8s_api.requests("DELETE")
    assert [r.path for r in deletes] == [
        "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/stale"
    ]
    left = {p.rsplit("/", 1)[1] for p in k8s_api.objects("InferenceService")}
    assert left == {"iris", "failed-this-pass", "out-of-scope", "hand-made", "elsewhere"}
    live = k8s_api.objects()[
        "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/iris"
    ]
    assert live["metadata"]["annotations"]["mlflow-kubeflow-bridge.io/version"] == "2"


def test_foreign_objects_are_never_changed_fake_k8s_api(k8s_api):
    k8s_api.seed(foreign("iris"), foreign("mlflow-bridge-models", kind="ServiceAccount"))
    change = run(k8s_api, [service_account(OPTS, "models"), isvc("iris"), isvc("wine")])
    assert set(change.errors) == {"iris"}
    err = change.errors["iris"]
    assert isinstance(err, CheckFailed)
    assert "models/iris exists and is not managed by bridge" in err.one_line()
    assert change.skipped == ["ServiceAccount/models/mlflow-bridge-models"]
    assert [r.path.rsplit("/", 1)[1] for r in k8s_api.requests("PATCH")] == ["wine"]
    assert not k8s_api.requests("DELETE")


def test_dry_run_changes_nothing_fake_k8s_api(k8s_api):
    k8s_api.seed(isvc("stale"))
    change = run(k8s_api, [service_account(OPTS, "models"), isvc("iris")], dry_run="server")
    assert change.dry_run == "server" and change.pruned == ["InferenceService/models/stale"]
    assert k8s_api.requests("PATCH") and k8s_api.requests("DELETE")
    assert all(r.query.get("dryRun") == "All" for r in k8s_api.requests("PATCH"))
    assert all(r.query.get("dryRun") == "All" for r in k8s_api.requests("DELETE"))
    assert set(k8s_api.objects()) == {
        "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/stale"
    }


def test_client_dry_run_sends_no_write_fake_k8s_api(k8s_api):
    """kubectl's --dry-run=client: reads (to know what is owned and stale), no write at all,
    and the same report of what would be applied and pruned."""
    k8s_api.seed(isvc("stale"))
    desired = [service_account(OPTS, "models"), isvc("iris")]
    change = run(k8s_api, desired, dry_run="client")
    assert change.dry_run == "client"
    assert change.applied == [
        "ServiceAccount/models/mlflow-bridge-models",
        "InferenceService/models/iris",
    ]
    assert change.pruned == ["InferenceService/models/stale"]
    assert {r.method for r in k8s_api.requests()} == {"GET"}
    assert set(k8s_api.objects()) == {
        "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/stale"
    }


def test_rbac_denial_is_one_clear_line_fake_k8s_api(k8s_api):
    k8s_api.state.forbidden_namespaces.add("locked")
    change = reconcile_cluster(
        client(k8s_api),
        [isvc("iris"), isvc("secret-model", ns="locked")],
        namespaces={"models"},
        keep=set(),
        in_scope=lambda _n: True,
        force=True,
        dry_run="none",
    )
    assert set(change.errors) == {"secret-model"}
    line = change.errors["secret-model"].one_line()
    assert "\n" not in line and "forbidden by RBAC (403)" in line
    assert 'cannot list resource "inferenceservices"' in line and "docs/serving.md#rbac" in line
    assert change.errors["secret-model"].exit_code == 2
    assert "InferenceService/models/iris" in change.applied


def test_missing_crd_stops_the_pass_fake_k8s_api(k8s_api):
    k8s_api.state.missing_crd = True
    with pytest.raises(PermanentError) as err:
        run(k8s_api, [isvc("iris")])
    line = err.value.one_line()
    assert "serving.kserve.io/v1beta1 (InferenceService) is not served" in line
    assert "CRD" in line and "install KServe" in line
    assert not k8s_api.requests("PATCH")


def test_missing_namespace_is_named_fake_k8s_api(k8s_api):
    k8s_api.state.missing_namespaces.add("models")
    change = run(k8s_api, [isvc("iris")])
    assert "namespace 'models' does not exist (404)" in change.errors["iris"].one_line()


def test_conflict_without_force_is_reported_fake_k8s_api(k8s_api):
    k8s_api.seed(isvc("iris"))
    k8s_api.state.conflict_names.add("iris")
    change = run(k8s_api, [isvc("iris", version="2"), isvc("wine")], force=False)
    assert set(change.errors) == {"iris"}
    err = change.errors["iris"]
    assert isinstance(err, CheckFailed) and err.exit_code == 1
    line = err.one_line()
    assert "conflict (409)" in line and 'conflict with "kubectl-edit"' in line
    assert "BRIDGE_APPLY_FORCE" in line
    # With force (the default) bridge takes its fields back.
    change = run(k8s_api, [isvc("iris", version="2"), isvc("wine")], force=True)
    assert not change.errors


def test_unauthorized_is_one_clear_line_fake_k8s_api(k8s_api):
    k8s_api.state.unauthorized = True
    with pytest.raises(PermanentError) as err:
        run(k8s_api, [isvc("iris")])
    assert "rejected the credentials (401 Unauthorized)" in err.value.one_line()
    assert "fake-k8s-token" not in err.value.one_line()


def test_kubeconfig_context_must_exist_fake_k8s_api(k8s_api):
    with pytest.raises(UsageError) as err:
        load_api_client(str(k8s_api.kubeconfig), "no-such-context")
    assert "no usable Kubernetes configuration" in err.value.one_line()


def test_unreachable_api_is_temporary_fake_k8s_api(k8s_api, tmp_path):
    import socket

    from bridge.errors import TemporaryError
    from tests.fake_k8s_api import FakeKubeAPI

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = FakeKubeAPI()
    dead.server.server_close()
    cfg = dead.write_kubeconfig(tmp_path / "dead")
    cfg.write_text(cfg.read_text().replace(dead.url, f"http://127.0.0.1:{port}"))
    kube = KubeClient(load_api_client(str(cfg), None))
    with pytest.raises(TemporaryError) as err:
        kube.list(INFERENCE_SERVICE, "models", "a=b")
    assert "cannot reach the Kubernetes API" in err.value.one_line()


def test_requests_stay_within_the_granted_verbs_fake_k8s_api(k8s_api):
    """What the code really sends, as the fake API server authorizes it (the verbs a
    real one checks, including create for an apply that creates), needs no verb beyond
    cluster.VERBS_USED, which the RBAC Role in manifests/ grants exactly."""
    from bridge.cluster import VERBS_USED
    from bridge.serving import service_account as build_sa

    k8s_api.seed(isvc("stale"))
    desired = [build_sa(OPTS, "models"), isvc("iris")]
    change = run(k8s_api, desired)
    assert not change.errors
    used: dict[tuple[str, str], set[str]] = {}
    for check in k8s_api.checks():
        used.setdefault((check.group, check.resource), set()).add(check.verb)
    assert (
        used[("serving.kserve.io", "inferenceservices")]
        == VERBS_USED[("serving.kserve.io", "inferenceservices")]
    )
    for key, verbs in used.items():
        assert verbs <= VERBS_USED[key], (key, verbs)
