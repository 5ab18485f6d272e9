"""What KServe says about a live InferenceService (pure: reads the object's ``.status``).

KServe's controller writes the status (kserve/kserve
pkg/apis/serving/v1beta1/inference_service_status.go): knative-style ``conditions``
(``Ready`` is the aggregate of ``PredictorReady`` and ``IngressReady``), ``url``,
``components.predictor`` (revisions and, in Knative mode, ``traffic`` per revision),
``modelStatus`` (``transitionStatus`` UpToDate / InProgress / BlockedByFailedLoad /
InvalidSpec, ``states.activeModelState`` / ``targetModelState`` Pending / Standby /
Loading / Loaded / FailedToLoad, ``lastFailureInfo``) and, for Standard-mode canaries,
``canaryStatuses``. This module turns that into one serving state and, for the canary
gate, answers "is the champion served?".
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.log import redact

SERVING = "serving"
NOT_READY = "not_ready"
FAILED_TO_LOAD = "failed_to_load"
SERVING_STATES = (SERVING, NOT_READY, FAILED_TO_LOAD)

_FAILED_TRANSITIONS = {"BlockedByFailedLoad", "InvalidSpec"}


@dataclass(frozen=True)
class Condition:
    status: str  # "True", "False" or "Unknown"
    reason: str = ""
    message: str = ""

    def describe(self, kind: str) -> str:
        message = redact(" ".join(self.message.split())[:300])
        why = ": ".join(x for x in (self.reason, message) if x)
        return f"{kind} is {self.status}" + (f" ({why})" if why else "")


@dataclass(frozen=True)
class Traffic:
    revision: str | None
    percent: int | None
    latest: bool | None = None
    tag: str | None = None


@dataclass(frozen=True)
class LiveStatus:
    """The facts of one InferenceService's ``.status`` that bridge reports on."""

    ready: Condition | None = None
    predictor_ready: Condition | None = None
    url: str | None = None
    current: bool = True  # status.observedGeneration is the object's generation
    transition_status: str | None = None
    active_model_state: str | None = None
    target_model_state: str | None = None
    failure: str | None = None  # lastFailureInfo: reason and message
    latest_rolled_out: str | None = None  # Knative: last revision that had 100 %
    traffic: tuple[Traffic, ...] = ()
    canaries: tuple[dict, ...] = ()  # Standard mode canaryStatuses
    reported: bool = True  # False: the object has no .status at all yet

    def as_dict(self) -> dict:
        def cond(c: Condition | None):
            return None if c is None else {"status": c.status, "reason": c.reason or None}

        return {
            "ready": cond(self.ready),
            "predictor_ready": cond(self.predictor_ready),
            "url": self.url,
            "current": self.current,
            "transition_status": self.transition_status,
            "active_model_state": self.active_model_state,
            "target_model_state": self.target_model_state,
            "failure": self.failure,
            "traffic": [t.__dict__ for t in self.traffic],
            "canaries": list(self.canaries),
        }


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _str(value) -> str | None:
    return str(value) if value not in (None, "") else None


def read_status(resource: dict) -> LiveStatus | None:
    """The LiveStatus of an InferenceService dict; None when it has no status yet."""
    status = _dict(resource.get("status"))
    if not status:
        return None
    conditions = {}
    for c in status.get("conditions") or []:
        if isinstance(c, dict) and c.get("type"):
            conditions[c["type"]] = Condition(
                str(c.get("status") or "Unknown"),
                str(c.get("reason") or ""),
                str(c.get("message") or ""),
            )
    predictor = _dict(_dict(status.get("components")).get("predictor"))
    model = _dict(status.get("modelStatus"))
    states = _dict(model.get("states"))
    failure = _dict(model.get("lastFailureInfo"))
    generation = _dict(resource.get("metadata")).get("generation")
    observed = status.get("observedGeneration")
    traffic = tuple(
        Traffic(
            _str(t.get("revisionName")),
            t.get("percent") if isinstance(t.get("percent"), int) else None,
            t.get("latestRevision") if isinstance(t.get("latestRevision"), bool) else None,
            _str(t.get("tag")),
        )
        for t in predictor.get("traffic") or []
        if isinstance(t, dict)
    )
    canaries = tuple(
        {k: c.get(k) for k in ("name", "ready", "trafficPercent")}
        for c in status.get("canaryStatuses") or []
        if isinstance(c, dict)
    )
    return LiveStatus(
        ready=conditions.get("Ready"),
        predictor_ready=conditions.get("PredictorReady"),
        url=_str(status.get("url")) or _str(predictor.get("url")),
        current=generation is None or observed is None or observed == generation,
        transition_status=_str(model.get("transitionStatus")),
        active_model_state=_str(states.get("activeModelState")),
        target_model_state=_str(states.get("targetModelState")),
        # KServe copies container termination messages here: they may quote URLs.
        failure=redact(
            ": ".join(x for x in (_str(failure.get("reason")), _str(failure.get("message"))) if x)
        )
        or None,
        latest_rolled_out=_str(predictor.get("latestRolledoutRevision")),
        traffic=traffic,
        canaries=canaries,
    )


def serving_state(live: LiveStatus | None) -> tuple[str, tuple[str, ...]]:
    """``serving``, ``not_ready`` or ``failed_to_load``, and why when not serving."""
    if live is None or not live.reported:
        return NOT_READY, ("KServe has reported no status yet: is its controller running?",)
    failed = FAILED_TO_LOAD in (live.target_model_state, live.active_model_state)
    if failed or live.transition_status in _FAILED_TRANSITIONS:
        why = [f"the model failed to load (transitionStatus {live.transition_status or '?'})"]
        if live.failure:
            why.append(f"last failure: {live.failure}")
        return FAILED_TO_LOAD, tuple(why)
    reasons = []
    if live.ready is None or live.ready.status != "True":
        reasons.append(live.ready.describe("Ready") if live.ready else "no Ready condition yet")
    if live.predictor_ready is not None and live.predictor_ready.status != "True":
        reasons.append(live.predictor_ready.describe("PredictorReady"))
    if not live.current:
        reasons.append("the status describes an older generation: KServe is still reconciling")
    if reasons:
        return NOT_READY, tuple(reasons)
    return SERVING, ()
