"""The pure parts of serving as KServe behaves: reading an InferenceService's .status,
the canary gate (is the champion served?) and stage-based approval.

Status shapes follow kserve/kserve pkg/apis/serving/v1beta1/inference_service_status.go
at aaac4e294dae2c7b1aa1886447793f3aa1c30912 (conditions, modelStatus.states,
transitionStatus, lastFailureInfo, components.predictor.latestRolledoutRevision)."""

from __future__ import annotations

from bridge.approval import approved_by, stage_hint, with_stage_approval
from bridge.kserve_status import (
    FAILED_TO_LOAD,
    NOT_READY,
    SERVING,
    read_status,
    serving_state,
)
from bridge.registry import RegisteredModelInfo
from bridge.serving import (
    DesiredService,
    ServedVersion,
    ServingOptions,
    champion_served,
    inference_service,
)

CHAMP = ServedVersion("1", "s3://b/m/1/", "sha256:aa", "r1", "mlflow-artifacts:/1")
CANARY = ServedVersion("2", "s3://b/m/2/", "sha256:bb", "r2", "mlflow-artifacts:/2")
OPTS = ServingOptions(namespace="models", service_account="sa")


def emitted(served: bool, canary: ServedVersion | None = CANARY) -> dict:
    return inference_service(
        DesiredService(
            "m", "m", "champion", CHAMP, canary=canary, canary_alias="challenger",
            champion_served=served,
        ),
        OPTS,
    )  # fmt: skip


def with_status(obj: dict, ready: str = "True", generation: int = 1, observed: int = 1, **extra):
    obj = {**obj, "metadata": {**obj["metadata"], "generation": generation}}
    obj["status"] = {
        "observedGeneration": observed,
        "conditions": [
            {"type": "PredictorReady", "status": ready},
            {"type": "Ready", "status": ready, "reason": "" if ready == "True" else "Waiting"},
        ],
        "url": "http://m.models.example.com",
        "components": {"predictor": {"latestRolledoutRevision": "m-predictor-00001"}},
        **extra,
    }
    return obj


def test_serving_state_from_kserve_status():
    assert serving_state(read_status(with_status(emitted(False)))) == (SERVING, ())
    state, why = serving_state(read_status(with_status(emitted(False), ready="Unknown")))
    assert state == NOT_READY and any("Ready is Unknown (Waiting)" in w for w in why)
    failed = with_status(
        emitted(False),
        ready="False",
        modelStatus={
            "transitionStatus": "BlockedByFailedLoad",
            "states": {"activeModelState": "Loaded", "targetModelState": "FailedToLoad"},
            "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "boom"},
        },
    )
    state, why = serving_state(read_status(failed))
    assert state == FAILED_TO_LOAD and "last failure: ModelLoadFailed: boom" in why
    stale = read_status(with_status(emitted(False), generation=2, observed=1))
    assert serving_state(stale)[0] == NOT_READY
    assert read_status(emitted(False)) is None
    assert read_status(with_status(emitted(False))).url == "http://m.models.example.com"


def test_champion_served_gate():
    first = emitted(False)
    assert champion_served(None, CHAMP.storage_uri, live=True) == (
        "the InferenceService does not exist yet"
    )
    assert champion_served(None, CHAMP.storage_uri, live=False) == "it was not emitted yet"
    # GitOps: emitted by a previous pass is all that can be known.
    assert champion_served(first, CHAMP.storage_uri, live=False) is None
    # Live: it must be Ready for its generation and (Knative) rolled out.
    assert "not reported" in champion_served(first, CHAMP.storage_uri, live=True)
    assert "not Ready" in champion_served(
        with_status(first, ready="Unknown"), CHAMP.storage_uri, live=True
    )
    assert "latest generation" in champion_served(
        with_status(first, generation=2), CHAMP.storage_uri, live=True
    )
    assert champion_served(with_status(first), CHAMP.storage_uri, live=True) is None
    no_rollout = with_status(first, components={"predictor": {}})
    assert "rolled out" in champion_served(no_rollout, CHAMP.storage_uri, live=True)
    # The champion moved: the object still serves the old one, so the canary waits.
    moved = ServedVersion("3", "s3://b/m/3/", "sha256:cc", "r3", "mlflow-artifacts:/3")
    assert "not the champion's s3://b/m/3/" in champion_served(
        with_status(first), moved.storage_uri, live=True
    )
    # An object that already routes a canary for this champion keeps it (no flapping
    # while the canary's own revision is not Ready).
    routed = with_status(emitted(True), ready="Unknown")
    assert champion_served(routed, CHAMP.storage_uri, live=True) is None
    # Not bridge's: never.
    foreign = {**first, "metadata": {**first["metadata"], "labels": {}}}
    assert champion_served(foreign, CHAMP.storage_uri, live=False) is not None


def test_stage_approval_alias_wins_and_hint():
    staged = RegisteredModelInfo("a", {}, stages={"Production": "3", "Staging": "4"})
    both = RegisteredModelInfo("b", {"champion": "5"}, stages={"Production": "3"})
    plain = RegisteredModelInfo("c", {})
    assert with_stage_approval([staged, both, plain], "champion", None) == [staged, both, plain]
    a, b, c = with_stage_approval([staged, both, plain], "champion", "Production")
    assert a.aliases == {"champion": "3"} and b.aliases == {"champion": "5"} and c.aliases == {}
    assert approved_by(staged, "champion", "Production") == "stage Production"
    assert approved_by(both, "champion", "Production") == "alias champion"
    hint = stage_hint(staged, "champion", None)
    assert "version 3 in stage 'Production'" in hint and "BRIDGE_STAGE" in hint
    assert stage_hint(staged, "champion", "Production") is None
    assert (
        stage_hint(both, "champion", None) is None and stage_hint(plain, "champion", None) is None
    )


def test_kserve_messages_are_redacted():
    failed = with_status(
        emitted(False),
        ready="False",
        modelStatus={
            "transitionStatus": "BlockedByFailedLoad",
            "lastFailureInfo": {
                "reason": "ModelLoadFailed",
                "message": "GET https://u:s3cr3t@s3/x",
            },
        },
    )
    _, why = serving_state(read_status(failed))
    assert "s3cr3t" not in " ".join(why) and "https://" in " ".join(why)
