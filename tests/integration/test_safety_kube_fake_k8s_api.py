"""Safety against a Kubernetes API, played by the local HTTP fake (no real cluster here).

Issue 13, items 2 and 4:

- The shipped RBAC Role must let bridge do what it does on a real API server. The fake
  authorizes as the real one: a server-side apply (PATCH) is checked as ``patch``, and,
  when the object does not exist yet, also as ``create`` with the object's name, dry run
  included (kubernetes/kubernetes staging/src/k8s.io/apiserver/pkg/endpoints/handlers/
  patch.go at commit 00f7534700c03146d83def73a4cfa9aadd527faa: ``createAuthorizerAttributes``
  with Verb "create" and Name, wrapped by ``withAuthorization`` around the create path that
  ``forceAllowCreate`` opens for apply patches). Its policy is manifests/base/role.yaml, as
  the kustomization binds it.
- Tags cannot move or destroy serving: a ``bridge.namespace`` outside
  ``BRIDGE_ALLOWED_NAMESPACES`` (default: only ``BRIDGE_NAMESPACE``) and resources above
  the ``BRIDGE_TAG_MAX_*`` bounds fail that model only, which keeps what it had; a model
  whose new object cannot be applied keeps the object that served it.
"""

from __future__ import annotations

import pytest

from bridge.cluster import reconcile_cluster
from bridge.errors import PermanentError
from bridge.kube import KubeClient, load_api_client
from bridge.names import k8s_name
from bridge.overrides import ServingSpec
from bridge.serving import (
    DesiredService,
    ServedVersion,
    ServingOptions,
    inference_service,
    service_account,
)
from tests.fake_k8s_api import Policy

from .conftest import unique

pytestmark = [pytest.mark.fake_k8s_api]

TARGET_NS, DAEMON_NS = "models", "mlops"
ISVC_PATH = "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}"
OPTS = ServingOptions(namespace=TARGET_NS, service_account="mlflow-bridge-models")
# The Role as shipped before this change: server-side apply granted as "patch" only.
PATCH_ONLY_ROLE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: mlflow-bridge-inferenceservices}
rules:
  - apiGroups: ["serving.kserve.io"]
    resources: ["inferenceservices"]
    verbs: ["get", "list", "patch", "delete"]
"""


def isvc(name: str, ns: str = TARGET_NS, version: str = "1") -> dict:
    v = ServedVersion(version, f"s3://b/{name}/{version}/", "sha256:ab", "r1", "models:/m-1")
    return inference_service(
        DesiredService(name, name, "champion", v, ServingSpec(namespace=ns)), OPTS
    )


def kube(k8s_api) -> KubeClient:
    return KubeClient(load_api_client(str(k8s_api.kubeconfig), "fake"))


def apply_all(k8s_api, desired, *, keep=(), dry_run="none"):
    return reconcile_cluster(
        kube(k8s_api),
        desired,
        namespaces={TARGET_NS},
        keep=set(keep),
        in_scope=lambda _n: True,
        force=True,
        dry_run=dry_run,
    )


def shipped_role(k8s_api) -> None:
    k8s_api.state.policy = Policy.shipped_role(TARGET_NS, DAEMON_NS)


# --------------------------------------------------------------------- item 2: RBAC


def test_fake_authorizes_an_apply_that_creates_as_create_fake_k8s_api(k8s_api):
    """The fake itself: a patch-only grant updates an existing object but cannot create
    one by apply (dry run or not), and says so the way the real server does."""
    k8s_api.state.policy = Policy.from_roles(PATCH_ONLY_ROLE)
    k8s_api.seed(isvc("existing"))
    for dry_run in ("server", "none"):
        change = apply_all(
            k8s_api, [isvc("existing", version="2"), isvc("new-one")], dry_run=dry_run
        )
        assert set(change.errors) == {"new-one"}, change.errors
        line = change.errors["new-one"].one_line()
        assert 'inferenceservices.serving.kserve.io "new-one" is forbidden' in line
        assert "needs patch, and create for a new object" in line
    verbs = [(c.verb, c.name, c.allowed) for c in k8s_api.checks() if c.verb in ("patch", "create")]
    assert ("create", "new-one", False) in verbs
    assert ("patch", "existing", True) in verbs
    assert not any(v == "create" and n == "existing" for v, n, _ in verbs)
    assert set(k8s_api.objects("InferenceService")) == {
        ISVC_PATH.format(ns=TARGET_NS, name="existing")
    }


def test_shipped_role_lets_the_first_apply_create_fake_k8s_api(k8s_api):
    """With the Role from manifests/, the first pass creates the ServiceAccount and the
    InferenceServices (dry run first, then for real), and later passes update them."""
    shipped_role(k8s_api)
    desired = [service_account(OPTS, TARGET_NS), isvc("iris"), isvc("wine")]
    dry = apply_all(k8s_api, desired, dry_run="server")
    assert not dry.errors, {k: e.one_line() for k, e in dry.errors.items()}
    assert not k8s_api.objects()
    change = apply_all(k8s_api, desired)
    assert not change.errors, {k: e.one_line() for k, e in change.errors.items()}
    assert len(k8s_api.objects("InferenceService")) == 2
    assert len(k8s_api.objects("ServiceAccount")) == 1
    creates = {(c.resource, c.name) for c in k8s_api.checks() if c.verb == "create"}
    assert creates == {
        ("serviceaccounts", "mlflow-bridge-models"),
        ("inferenceservices", "iris"),
        ("inferenceservices", "wine"),
    }
    assert all(c.allowed for c in k8s_api.checks())
    # The next pass updates (patch only) and prunes (list, delete).
    again = apply_all(k8s_api, [service_account(OPTS, TARGET_NS), isvc("iris", version="2")])
    assert not again.errors and again.pruned == [f"InferenceService/{TARGET_NS}/wine"]


def test_shipped_role_touches_only_the_named_service_account_fake_k8s_api(k8s_api):
    """The ServiceAccount rule names BRIDGE_SERVICE_ACCOUNT: apply (create included, since
    an apply names its object) works for it and is refused for any other name."""
    shipped_role(k8s_api)
    other = ServingOptions(namespace=TARGET_NS, service_account="someone-elses")
    k8s_api.seed(service_account(other, TARGET_NS))  # exists, even labelled as bridge's
    before = k8s_api.objects("ServiceAccount")
    change = apply_all(k8s_api, [service_account(other, TARGET_NS), isvc("iris")])
    assert "iris" in change.errors
    assert "forbidden" in change.errors["iris"].one_line()
    assert k8s_api.objects("ServiceAccount") == before
    assert not k8s_api.requests("PATCH")


def test_shipped_role_elects_a_leader_only_through_its_own_lease_fake_k8s_api(k8s_api):
    """Leases: create is granted (a POST carries no name to narrow by); get and update
    only for the Lease named in the ConfigMap (BRIDGE_LEASE_NAME)."""
    import yaml

    from bridge.lease import LeaderElector, LeaseLock
    from tests.fake_k8s_api import ROLE_FILE

    shipped_role(k8s_api)
    configmap = yaml.safe_load((ROLE_FILE.parent / "configmap.yaml").read_text())
    lease_name = configmap["data"]["BRIDGE_LEASE_NAME"]
    api = load_api_client(str(k8s_api.kubeconfig), "fake")

    leader = LeaderElector(LeaseLock(lease_name, DAEMON_NS, api=api), "a", lease_duration=30)
    assert leader.try_acquire_or_renew() is True  # get (404) -> create
    assert leader.try_acquire_or_renew() is True  # get -> update
    assert k8s_api.holder(DAEMON_NS, lease_name) == "a"
    lease_checks = [(c.verb, c.name) for c in k8s_api.checks() if c.resource == "leases"]
    assert ("create", "") in lease_checks and ("update", lease_name) in lease_checks

    stranger = LeaderElector(LeaseLock("another-lease", DAEMON_NS, api=api), "b", lease_duration=30)
    with pytest.raises(PermanentError, match="(?i)forbidden"):
        stranger.try_acquire_or_renew()
    assert k8s_api.lease(DAEMON_NS, "another-lease") is None


# ------------------------------------------------------------ item 4: failed apply


def test_a_model_whose_new_object_cannot_be_applied_keeps_its_old_one_fake_k8s_api(k8s_api):
    """A model moved to a namespace bridge may not write to: its apply there is refused,
    and the InferenceService that serves it now stays."""
    shipped_role(k8s_api)  # bound in TARGET_NS only
    k8s_api.seed(isvc("moved"), isvc("steady"))
    change = apply_all(k8s_api, [isvc("moved", ns="team-x"), isvc("steady", version="2")])
    assert set(change.errors) == {"moved"}
    assert "forbidden by RBAC (403)" in change.errors["moved"].one_line()
    assert change.pruned == []
    assert not [r for r in k8s_api.requests("DELETE")]
    assert ISVC_PATH.format(ns=TARGET_NS, name="moved") in k8s_api.objects()


def test_a_failed_apply_in_the_same_pass_keeps_what_served_the_model_fake_k8s_api(k8s_api):
    """Same when bridge may list there but the apply itself fails (namespace missing)."""
    k8s_api.seed(isvc("moved"))
    k8s_api.state.missing_namespaces.add("team-x")  # apply answers 404 namespace
    change = reconcile_cluster(
        kube(k8s_api),
        [isvc("moved", ns="team-x")],
        namespaces={TARGET_NS},
        keep=set(),
        in_scope=lambda _n: True,
        force=True,
        dry_run="none",
    )
    assert set(change.errors) == {"moved"}
    assert change.pruned == [] and not k8s_api.requests("DELETE")


# ------------------------------------------------- item 4: tags, end to end (CLI)


@pytest.mark.integration
def test_tags_cannot_move_or_oversize_serving_cli_fake_k8s_api(scope, register, client, k8s_api):
    """Real MLflow registry and `bridge sync --apply` against the fake API with the
    shipped Role: a tag asking for kube-system, or for more CPU than BRIDGE_TAG_MAX_CPU,
    fails that model with one line naming the bound and its setting; its live
    InferenceService stays; the other model syncs. A namespace that is allowed but not
    writable (no RoleBinding there) fails the apply, and the old object stays too."""
    shipped_role(k8s_api)
    ok, moved, big = unique("ok"), unique("moved"), unique("big")
    [v] = register(ok, 1)
    client.set_registered_model_alias(ok, scope.alias, v)
    mv = client.get_model_version(ok, v)
    for name, tags in (
        (moved, {"bridge.namespace": "kube-system"}),
        (big, {"bridge.cpu": "64"}),
    ):
        client.create_registered_model(name, tags=tags)
        client.create_model_version(
            name, mv.source, run_id=mv.run_id, model_id=mv.model_id or mv.source.rsplit("/")[-1]
        )
        client.set_registered_model_alias(name, scope.alias, "1")
    live = {name: isvc(k8s_name(name)) for name in (moved, big)}
    k8s_api.seed(*live.values())
    env = {"BRIDGE_KUBECONFIG": str(k8s_api.kubeconfig), "BRIDGE_NAMESPACE": TARGET_NS}

    res = scope.run("sync", "--once", "--apply", env=env)
    assert res.returncode == 1, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 2, res.stderr
    [ns_line] = [ln for ln in errors if moved in ln]
    assert "namespace 'kube-system', which is not allowed" in ns_line
    assert "BRIDGE_ALLOWED_NAMESPACES" in ns_line
    [cpu_line] = [ln for ln in errors if big in ln]
    assert "tag 'bridge.cpu' asks for 64, above the bound 8 (BRIDGE_TAG_MAX_CPU)" in cpu_line
    assert "Traceback" not in res.stderr
    names = {p.rsplit("/", 1)[1] for p in k8s_api.objects("InferenceService")}
    assert names == {k8s_name(ok), k8s_name(moved), k8s_name(big)}
    assert not k8s_api.requests("DELETE")
    assert not [r for r in k8s_api.requests() if "/namespaces/kube-system/" in r.path]
    for name, obj in live.items():
        assert k8s_api.objects()[ISVC_PATH.format(ns=TARGET_NS, name=k8s_name(name))] == obj

    # Allowed by the setting, but bridge cannot write there: the old object still stays.
    client.set_registered_model_tag(moved, "bridge.namespace", "team-x")
    client.delete_registered_model_tag(big, "bridge.cpu")
    res = scope.run("sync", "--once", "--apply", env={**env, "BRIDGE_ALLOWED_NAMESPACES": "team-x"})
    assert res.returncode == 2, res.stderr
    [line] = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert "team-x" in line and "forbidden by RBAC (403)" in line
    assert ISVC_PATH.format(ns=TARGET_NS, name=k8s_name(moved)) in k8s_api.objects()
    assert not k8s_api.requests("DELETE")
