"""Progressive delivery of a canary: the state machine (pure).

A rollout walks the canary (the version the canary alias points at) through
traffic steps, default 10 → 50 → 100. Each step bakes for a while; at its end
every guard is judged: all pass → the next step (100 means the canary becomes
champion); a guard fails, or the guards have had no data for longer than the
grace period → abort. The state is a small JSON document kept in the
registered-model tag ``bridge.rollout`` so that any process (a restarted or new
leader, a CLI run) resumes it where it stands. Nothing here does I/O: the driver
(:mod:`bridge.rollout_driver`) reads the registry and Prometheus, calls
:func:`next_action` / :func:`judge`, and carries out the decision.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from bridge.errors import UsageError
from bridge.keys import ROLLOUT_BAKE_TAG, ROLLOUT_STEPS_TAG, ROLLOUT_TAG

RUNNING, COMPLETE, ABORTED, OVERRIDDEN = "running", "complete", "aborted", "overridden"
TERMINAL = (COMPLETE, ABORTED, OVERRIDDEN)


@dataclass(frozen=True)
class Plan:
    steps: tuple[int, ...]
    bake: float  # seconds each step is watched before its guards are judged
    grace: float  # seconds the guards may have no data before the rollout aborts


def parse_steps(value: str, where: str = "BRIDGE_ROLLOUT_STEPS") -> tuple[int, ...]:
    """``"10,50,100"``: rising percents from 1, ending at 100."""
    try:
        steps = tuple(int(s) for s in value.replace(" ", "").split(",") if s)
    except ValueError:
        raise UsageError(
            f"{where} {value!r} is not a list of whole percents", hint="e.g. 10,50,100"
        ) from None
    if (
        not steps
        or steps[-1] != 100
        or steps[0] < 1
        or any(b <= a for a, b in zip(steps, steps[1:], strict=False))
    ):
        raise UsageError(
            f"{where} {value!r} must rise from 1 or more and end at 100", hint="e.g. 10,50,100"
        )
    return steps


def plan_for(settings, tags: dict[str, str]) -> Plan:
    steps = parse_steps(
        tags.get(ROLLOUT_STEPS_TAG) or settings.rollout_steps,
        ROLLOUT_STEPS_TAG if tags.get(ROLLOUT_STEPS_TAG) else "BRIDGE_ROLLOUT_STEPS",
    )
    bake = settings.rollout_bake
    if tags.get(ROLLOUT_BAKE_TAG):
        try:
            bake = float(tags[ROLLOUT_BAKE_TAG])
            if bake <= 0:
                raise ValueError
        except ValueError:
            raise UsageError(
                f"tag {ROLLOUT_BAKE_TAG} {tags[ROLLOUT_BAKE_TAG]!r} is not a number of seconds > 0"
            ) from None
    return Plan(steps, bake, settings.rollout_grace)


def view_from_tags(settings, tags: dict[str, str], now: float) -> dict | None:
    """The rollout as `bridge status` shows it, from a registered model's tags."""
    state = State.from_json(tags.get(ROLLOUT_TAG))
    if state is None:
        return None
    try:
        plan = plan_for(settings, tags)
    except UsageError:  # a bad plan tag: show the state, the driver reports the error
        plan = Plan(state.steps, 0.0, 0.0)
    return state.view(plan, now)


@dataclass(frozen=True)
class State:
    """What the ``bridge.rollout`` tag holds."""

    version: str  # the canary version this rollout is about
    champion: str | None  # the champion when it started
    steps: tuple[int, ...]
    step: int  # index into steps
    step_started: float  # epoch seconds
    status: str = RUNNING
    missing_since: float | None = None
    last: list = field(default_factory=list)  # last guard results (GuardResult.as_dict())
    reason: str | None = None

    @property
    def percent(self) -> int:
        return self.steps[self.step]

    def to_json(self) -> str:
        d = asdict(self)
        d["steps"] = list(self.steps)
        return json.dumps(d, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> State | None:
        """None for no tag or a damaged one (a damaged state restarts the rollout)."""
        if not text:
            return None
        try:
            d = json.loads(text)
            d["steps"] = tuple(int(s) for s in d["steps"])
            state = cls(**d)
            state.percent  # noqa: B018 - the step index must be in range
        except (ValueError, TypeError, KeyError, IndexError):
            return None
        return state

    def view(self, plan: Plan, now: float) -> dict:
        """For `bridge status`, /status and the metrics."""
        running = self.status == RUNNING
        return {
            "status": self.status,
            "version": self.version,
            "step": self.step + 1,
            "steps": list(self.steps),
            "percent": self.percent,
            "next_step_in": max(0.0, round(self.step_started + plan.bake - now, 1))
            if running
            else None,
            "missing_since": self.missing_since,
            "last_guards": self.last,
            "reason": self.reason,
        }


def describe(view: dict) -> str:
    """One line for people: ``running step 2/3 50%, next check in 42s [error-ratio=0.002]``."""
    line = f"{view['status']} step {view['step']}/{len(view['steps'])} {view['percent']}%"
    if view.get("next_step_in") is not None:
        line += f", next check in {view['next_step_in']:.0f}s"
    guards = ", ".join(
        f"{g['guard']}={'no data' if g['value'] is None else format(g['value'], '.4g')}"
        for g in view.get("last_guards") or []
    )
    return line + (f" [{guards}]" if guards else "")


@dataclass(frozen=True)
class Observed:
    """The registry as the driver read it."""

    canary: str | None  # version the canary alias points at
    champion: str | None
    traffic_percent: str | None  # the bridge.canary-traffic-percent tag
    served_percent: int | None = None  # canaryTrafficPercent of the live InferenceService


# Decisions
IDLE, START, SET_TRAFFIC, NOTICE, WAIT, EVALUATE, ADVANCE, COMPLETE_NOW, ABORT_NOW = (
    "idle",
    "start",
    "set-traffic",
    "notice",
    "wait",
    "evaluate",
    "advance",
    "complete",
    "abort",
)


@dataclass(frozen=True)
class Decision:
    kind: str
    state: State | None = None  # the state to write (for start, notice, advance, wait, abort)
    wait: float = 0.0
    reason: str | None = None


def next_action(plan: Plan, state: State | None, obs: Observed, now: float) -> Decision:
    """What to do before any guard is judged."""
    if obs.canary is None:
        if state is None or state.status != RUNNING:
            return Decision(IDLE)
        # The canary alias went away under a running rollout: a person ended it.
        if obs.champion == state.version:
            why = f"version {state.version} became champion outside the rollout"
        else:
            why = f"the canary alias was removed outside the rollout (version {state.version})"
        return Decision(NOTICE, replace(state, status=OVERRIDDEN, reason=why), reason=why)
    if state is None or state.version != obs.canary:
        fresh = State(obs.canary, obs.champion, plan.steps, 0, now)
        return Decision(START, fresh, reason=f"rollout of version {obs.canary} started")
    if state.status != RUNNING:
        return Decision(IDLE)
    if obs.traffic_percent != str(state.percent):
        before = str(state.steps[state.step - 1]) if state.step > 0 else None
        if obs.traffic_percent in (before, None):
            # the state was written but the traffic tag not yet (a crash in between)
            return Decision(SET_TRAFFIC, state)
        why = (
            f"canary traffic set to {obs.traffic_percent}% outside the rollout "
            f"(step {state.step + 1} is {state.percent}%)"
        )
        return Decision(NOTICE, replace(state, status=OVERRIDDEN, reason=why), reason=why)
    if obs.served_percent is not None and obs.served_percent != state.percent:
        # the bake counts from when the step is served (GitOps: after the commit is synced)
        why = (
            f"waiting for the InferenceService to serve {state.percent}% "
            f"(it serves {obs.served_percent}%)"
        )
        return Decision(WAIT, replace(state, step_started=now), wait=plan.bake, reason=why)
    left = state.step_started + plan.bake - now
    if left > 0:
        return Decision(WAIT, state, wait=left)
    return Decision(EVALUATE, state)


def watch(
    plan: Plan, state: State, results: list, now: float, wait: float, reason: str | None = None
) -> Decision:
    """A check while the step bakes: a failing health guard aborts at once (missing data and
    thin traffic are only judged at the step's end)."""
    failed = [r for r in results if not r.missing and not r.passed]
    if failed:
        return judge(plan, state, results, now)
    return Decision(
        WAIT, replace(state, last=[r.as_dict() for r in results]), wait=wait, reason=reason
    )


def judge(plan: Plan, state: State, results: list, now: float) -> Decision:
    """The step's end: ``results`` are guard results (``passed``, ``missing``, ``as_dict()``)."""
    seen = [r.as_dict() for r in results]
    failed = [r for r in results if not r.missing and not r.passed]
    if failed:
        why = "; ".join(
            f"guard {r.guard.name} failed: {r.value:g} {r.guard.op} {r.guard.threshold:g} "
            f"does not hold (query: {r.query})"
            for r in failed
        )
        return Decision(
            ABORT_NOW, replace(state, status=ABORTED, last=seen, reason=why), reason=why
        )
    missing = [r for r in results if r.missing]
    if missing:
        since = state.missing_since if state.missing_since is not None else now
        names = ", ".join(r.guard.name for r in missing)
        if now - since >= plan.grace:
            why = (
                f"no data for guard(s) {names} for {now - since:.0f}s "
                f"(grace {plan.grace:g}s); queries: " + "; ".join(r.query for r in missing)
            )
            return Decision(
                ABORT_NOW, replace(state, status=ABORTED, last=seen, reason=why), reason=why
            )
        waiting = replace(state, missing_since=since, last=seen)
        return Decision(
            WAIT, waiting, wait=max(0.0, since + plan.grace - now), reason=f"no data yet: {names}"
        )
    if state.step + 1 >= len(state.steps) - 1:
        done = replace(
            state, step=len(state.steps) - 1, status=COMPLETE, last=seen, missing_since=None
        )
        return Decision(COMPLETE_NOW, done, reason=f"version {state.version} passed every step")
    nxt = replace(state, step=state.step + 1, step_started=now, missing_since=None, last=seen)
    return Decision(ADVANCE, nxt, reason=f"step {nxt.step + 1}: {nxt.percent}%")
