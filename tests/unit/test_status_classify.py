"""The pure half of `bridge status`: classification, the report, the table and the page."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from bridge.serving import (
    DesiredService,
    ServedVersion,
    ServingOptions,
    inference_service,
)
from bridge.status import (
    ModelFacts,
    ServedRef,
    StoreFacts,
    VersionFacts,
    build_report,
    classify,
    exit_code,
    served_ref_from_resource,
)
from bridge.status_html import render_html
from bridge.status_text import format_table

URI = "s3://models/prod/churn/{}/"


def store(
    version="3", *, published=True, problem=None, run_id="r3", model="churn", digest="sha256:aa"
):
    return StoreFacts(
        version,
        URI.format(version),
        published,
        digest if published else None,
        model if published else None,
        run_id if published else None,
        check="sizes" if published else "none",
        problem=problem,
    )


def ref(version="3", *, uri=None, digest="sha256:aa", alias="champion", source="output-dir"):
    return ServedRef(
        source=source,
        location=f"out/churn.yaml ({source})",
        k8s_name="churn",
        registered_model="churn",
        alias=alias,
        version=version,
        storage_uri=uri or URI.format(version),
        digest=digest,
    )


def facts(*, approved="3", stores=None, served=(), sources=("output-dir",), registered=True, **kw):
    stores = [store()] if stores is None else stores
    return ModelFacts(
        name="churn",
        k8s_name="churn",
        alias="champion",
        canary_alias="challenger",
        registered=registered,
        approved=VersionFacts(approved, "r3") if approved else None,
        store={s.version: s for s in stores},
        served=tuple(served),
        sources=tuple(sources),
        expected_uris={v: URI.format(v) for v in ("1", "2", "3", "4")},
        **kw,
    )


def test_in_sync_when_store_and_every_view_match():
    v = classify(facts(served=[ref()]))
    assert v.state == "in_sync" and v.reasons == ()


def test_in_sync_without_any_served_view_is_judged_on_the_store():
    assert classify(facts(sources=())).state == "in_sync"


@pytest.mark.parametrize(
    "f, why",
    [
        (facts(stores=[store(published=False)]), "not published"),
        (facts(stores=[]), "not published"),
        (facts(served=[]), "not in output-dir"),
        (
            ModelFacts(
                "churn",
                "churn",
                "champion",
                "challenger",
                approved=VersionFacts("3", "r3", "PENDING_REGISTRATION"),
                store={"3": store()},
                served=(ref(),),
                sources=("output-dir",),
            ),
            "PENDING_REGISTRATION",
        ),  # fmt: skip
    ],
)
def test_pending(f, why):
    v = classify(f)
    assert v.state == "pending"
    assert any(why in r for r in v.reasons), v.reasons


@pytest.mark.parametrize(
    "f, why",
    [
        # alias moved without a sync
        (facts(stores=[store("2"), store("3")], served=[ref("2")]), "serves version 2"),
        # alias moved to a version not even published yet: still drift, not pending
        (
            facts(stores=[store("2"), store("3", published=False)], served=[ref("2")]),
            "serves version 2",
        ),
        # hand-edited storageUri
        (facts(served=[ref(uri="s3://elsewhere/churn/3/")]), "storageUri"),
        # digest in the manifest differs from the store
        (facts(served=[ref(digest="sha256:bb")]), "digest"),
        # the store copy came from another run than the registry version
        (facts(stores=[store(run_id="other")], served=[ref()]), "came from run other"),
        # the store path holds another model
        (facts(stores=[store(model="fraud")], served=[ref()]), "holds model 'fraud'"),
        # one of two views differs (the cluster lags behind the output dir)
        (
            facts(
                stores=[store("2"), store("3")],
                served=[ref(), ref("2", source="cluster")],
                sources=("output-dir", "cluster"),
            ),
            "cluster serves version 2",
        ),  # fmt: skip
    ],
)
def test_drifted(f, why):
    v = classify(f)
    assert v.state == "drifted"
    assert any(why in r for r in v.reasons), v.reasons


@pytest.mark.parametrize(
    "f, why",
    [
        (
            facts(stores=[store(problem="MLmodel does not match its SHA-256")], served=[ref()]),
            "SHA-256",
        ),
        # approved and broken, nothing emitted yet: broken beats pending
        (facts(stores=[store(problem="conda.yaml is missing")], served=[]), "missing"),
        # served version's data was deleted from the store
        (facts(stores=[store(published=False)], served=[ref()]), "not published in the store"),
        # served old version is broken, and the alias moved: broken beats drifted
        (
            facts(stores=[store("2", problem="x is missing"), store("3")], served=[ref("2")]),
            "version 2 in the store fails verification",
        ),
        # orphaned, but what is still served is broken
        (
            facts(approved=None, stores=[store(problem="gone")], served=[ref()]),
            "fails verification",
        ),
    ],
)
def test_broken(f, why):
    v = classify(f)
    assert v.state == "broken"
    assert any(why in r for r in v.reasons), v.reasons


def test_orphaned_when_served_but_no_longer_approved():
    v = classify(facts(approved=None, served=[ref()]))
    assert v.state == "orphaned"
    assert "alias 'champion' is not set" in v.reasons[-1]
    v = classify(facts(approved=None, served=[ref()], registered=False))
    assert v.state == "orphaned" and "no longer registered" in v.reasons[-1]


def test_canary_manifest_is_compared_with_the_canary_alias():
    f = ModelFacts(
        "churn", "churn", "champion", "challenger",
        approved=VersionFacts("3", "r3"), canary=VersionFacts("4", "r4"),
        store={"3": store(), "4": store("4", run_id="r4")},
        served=(ref(), ref("4", alias="challenger")), sources=("output-dir",),
    )  # fmt: skip
    assert classify(f).state == "in_sync"


def test_canary_manifest_alone_is_not_the_approved_one():
    f = ModelFacts(
        "churn", "churn", "champion", "challenger",
        approved=VersionFacts("3", "r3"), canary=VersionFacts("4", "r4"),
        store={"3": store(), "4": store("4", run_id="r4")},
        served=(ref("4", alias="challenger"),), sources=("output-dir",),
    )  # fmt: skip
    assert classify(f).state == "pending"
    stale = ModelFacts(
        "churn", "churn", "champion", "challenger",
        approved=VersionFacts("3", "r3"), store={"3": store(), "4": store("4", run_id="r4")},
        served=(ref(), ref("4", alias="challenger")), sources=("output-dir",),
    )  # fmt: skip
    v = classify(stale)
    assert v.state == "drifted" and "'challenger' is not set" in v.reasons[0]


def test_exit_code_fails_only_on_drifted_or_broken():
    assert exit_code([{"state": s} for s in ("in_sync", "pending", "orphaned")]) == 0
    assert exit_code([{"state": "in_sync"}, {"state": "drifted"}]) == 1
    assert exit_code([{"state": "broken"}]) == 1
    assert exit_code([]) == 0


def test_served_ref_reads_what_serving_emits():
    sv = ServedVersion("3", URI.format("3"), "sha256:aa", "r3", "mlflow-artifacts:/x")
    resource = inference_service(
        DesiredService("Churn Model", "churn-model-1a2b3c4d", "champion", sv),
        ServingOptions("ml", "sa"),
    )
    r = served_ref_from_resource(resource, "output-dir", "out/churn.yaml")
    assert (r.registered_model, r.version, r.storage_uri, r.digest, r.run_id, r.alias) == (
        "Churn Model", "3", URI.format("3"), "sha256:aa", "r3", "champion"
    )  # fmt: skip
    assert r.k8s_name == "churn-model-1a2b3c4d"
    resource["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "someone-else"
    assert served_ref_from_resource(resource, "output-dir", "x") is None
    assert served_ref_from_resource({"kind": "ConfigMap"}, "output-dir", "x") is None


def test_report_is_stable_json_with_the_contract_fields():
    report = build_report([facts(served=[ref()]), facts(approved=None, served=[ref()])])
    for row in report:
        assert {
            "name",
            "state",
            "reasons",
            "version",
            "store",
            "served",
            "run_id",
            "lineage",
        } <= set(row)
        assert row["state"] in ("in_sync", "pending", "drifted", "broken", "orphaned")
    assert report[0]["store"]["verified"] is True
    assert set(report[0]["lineage"]) >= {
        "kfp_pipeline_run_id",
        "kfp_pipeline_name",
        "kfp_task_name",
    }


def test_table_has_one_row_per_model_and_colour_only_when_asked():
    report = build_report([facts(served=[ref()])])
    plain = format_table(report)
    assert "\x1b[" not in plain
    assert plain.splitlines()[1].split()[:2] == ["churn", "in_sync"]
    assert "OUTPUT-DIR" in plain.splitlines()[0]
    assert "\x1b[" in format_table(report, colour=True)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "tr" and dict(attrs).get("data-model"):
            self.rows.append((dict(attrs)["data-model"], dict(attrs)["data-state"]))


def test_html_escapes_everything_and_has_no_script():
    evil = "<script>alert('x')</script>"
    row = build_report([facts(served=[ref()])])[0]
    row = {
        **row,
        "name": evil,
        "reasons": [evil],
        "lineage": {**row["lineage"], "kfp_pipeline_run_id": evil},
    }
    page = render_html([row, build_report([facts(approved=None, served=[ref()])])[0]])
    assert "<script>" not in page
    p = _Page()
    p.feed(page)
    assert "script" not in p.tags
    assert p.rows == [(evil, "in_sync"), ("churn", "orphaned")]


def test_html_for_an_empty_report():
    assert "no managed models" in render_html([])


def test_canary_manifest_yields_approved_and_canary_refs():
    """While a canary rolls out, spec.storageUri names the canary; the approved
    version is read from its own annotations, so a correct canary is in sync."""
    from bridge.serving import DesiredService, ServedVersion, ServingOptions, inference_service
    from bridge.status import served_refs_from_resource

    champ = ServedVersion("1", "s3://b/m/1/", "sha256:aa", "r1", "mlflow-artifacts:/1")
    canary = ServedVersion("2", "s3://b/m/2/", "sha256:bb", "r2", "mlflow-artifacts:/2")
    resource = inference_service(
        DesiredService(
            "m",
            "m",
            "champion",
            champ,
            canary=canary,
            canary_alias="challenger",
            champion_served=True,
        ),
        ServingOptions(namespace="models", service_account="sa"),
    )
    assert resource["spec"]["predictor"]["model"]["storageUri"] == "s3://b/m/2/"
    approved, canary_ref = served_refs_from_resource(resource, "output-dir", "m.yaml")
    assert (approved.alias, approved.version, approved.storage_uri, approved.digest) == (
        "champion",
        "1",
        "s3://b/m/1/",
        "sha256:aa",
    )
    assert (canary_ref.alias, canary_ref.version, canary_ref.storage_uri, canary_ref.digest) == (
        "challenger",
        "2",
        "s3://b/m/2/",
        "sha256:bb",
    )
