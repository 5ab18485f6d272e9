"""Carries out rollout decisions: the registry, Prometheus and the live InferenceService.

One :meth:`RolloutDriver.tick` reads a model, asks :mod:`bridge.rollout` what to do,
and does it. Steps move the ``bridge.canary-traffic-percent`` tag, which the
serving side (the daemon's sync pass, or ``bridge sync``) turns into the
InferenceService's ``canaryTrafficPercent`` — patched in apply mode, rewritten
in the GitOps directory otherwise. Completing and aborting move aliases under
the same lease ``bridge promote`` takes, and are recorded in ``bridge.history``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from bridge import guards as gd
from bridge import history
from bridge import rollout as ro
from bridge.errors import TemporaryError, UsageError
from bridge.keys import CANARY_TRAFFIC_TAG, ROLLOUT_TAG
from bridge.names import k8s_name
from bridge.promote import Lease, record_history
from bridge.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TickResult:
    model: str
    decision: ro.Decision
    view: dict | None  # State.view() after the tick

    @property
    def line(self) -> str:
        v = self.view or {}
        d = self.decision
        if d.kind == ro.IDLE and not v:
            return f"{self.model}: no canary"
        line = f"{self.model} v{v.get('version')}: {ro.describe(v)}"
        return line + (f" — {d.reason}" if d.reason else "")


class KubeRevisions:
    """The canary's and the champion's Knative revisions, from the live InferenceService.

    KServe records them in ``.status.components.predictor``: ``latestReadyRevision``
    (the canary while one runs) and ``previousRolledoutRevision`` (the champion);
    see ``ComponentStatusSpec`` in pkg/apis/serving/v1beta1/inference_service_status.go.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._kube = None

    def __call__(self, model: str, tags: dict[str, str]) -> tuple[gd.Revisions | None, int | None]:
        """(the two revisions, or None until KServe split them; the served canary percent)."""
        from bridge.kube import INFERENCE_SERVICE, KubeClient
        from bridge.overrides import parse_runtimes, resolve
        from bridge.serving import STANDARD_MODE
        from bridge.sync import serving_defaults

        spec = resolve(
            model, tags, serving_defaults(self.settings), parse_runtimes(self.settings.runtimes)
        )
        if spec.deployment_mode == STANDARD_MODE:
            # Standard mode weights spec.canary in the Gateway API HTTPRoute and has no
            # Knative revisions or queue-proxy series for the guards to read.
            raise UsageError(
                f"model {model!r} is served in Standard mode: a rollout steps Knative traffic",
                hint="use the Knative mode (tag bridge.deployment-mode=Knative) or promote by hand",
            )
        if self._kube is None:
            self._kube = KubeClient.from_settings(self.settings)
        name = k8s_name(model)
        obj = self._kube.get(INFERENCE_SERVICE, spec.namespace, name)
        obj = obj or {}
        served = ((obj.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
        predictor = (obj.get("status") or {}).get("components", {}).get("predictor", {})
        canary, champion = (
            predictor.get("latestReadyRevision"),
            predictor.get("previousRolledoutRevision"),
        )
        if not canary or not champion or canary == champion:
            return None, served  # not split yet: counts as missing data
        return gd.Revisions(spec.namespace, name, canary, champion), served


class RolloutDriver:
    def __init__(
        self, settings: Settings, registry, prometheus=None, revisions=None, clock=time.time
    ):
        if not settings.prometheus_url and prometheus is None:
            raise UsageError(
                "a rollout needs Prometheus for its guards",
                hint="set BRIDGE_PROMETHEUS_URL (e.g. http://prometheus.monitoring:9090)",
            )
        self.settings = settings
        self.registry = registry
        self.prom = prometheus or gd.Prometheus(settings.prometheus_url)
        self.guards = gd.parse_guards(settings.rollout_guards, settings.rollout_guards_file)
        self.revisions = revisions or KubeRevisions(settings)
        self.clock = clock
        self._checked: set[tuple[str, str]] = set()  # (model, version) whose metrics were checked

    def tick(self, model: str) -> TickResult:
        rm = self.registry.registered_model(model)
        tags = dict(rm.tags)
        plan = ro.plan_for(self.settings, tags)
        state = ro.State.from_json(tags.get(ROLLOUT_TAG))
        canary = rm.aliases.get(self.settings.canary_alias)
        rev, served = None, None
        if canary and state is not None and state.version == canary and state.status == ro.RUNNING:
            rev, served = self.revisions(model, tags)  # what the cluster serves right now
        obs = ro.Observed(
            canary, rm.aliases.get(self.settings.alias), tags.get(CANARY_TRAFFIC_TAG), served
        )
        now = self.clock()
        d = ro.next_action(plan, state, obs, now)
        if d.kind == ro.EVALUATE:
            d = ro.judge(plan, d.state, self._results(model, rev, plan, d.state), now)
        elif d.kind == ro.WAIT:  # baking: watch for a guard going bad
            results = self._results(model, rev, plan, d.state)
            d = ro.watch(plan, d.state, results, now, d.wait, d.reason)
        self._carry_out(model, d, state)
        shown = d.state or state
        return TickResult(model, d, shown.view(plan, now) if shown else None)

    def _results(self, model, rev, plan, state: ro.State) -> list[gd.GuardResult]:
        window = plan.bake
        if rev is None:
            results = [
                gd.GuardResult(g, "(canary and champion revisions not known yet)", None)
                for g in self.guards
            ]
        else:
            if (model, state.version) not in self._checked:
                gd.check_metrics(self.prom, self.guards, rev, window)
                self._checked.add((model, state.version))
            try:
                results = gd.evaluate(self.prom, self.guards, rev, window)
            except TemporaryError as exc:  # no monitoring is no data: the grace period applies
                log.warning("rollout of %s: %s", model, exc.one_line())
                results = [gd.GuardResult(g, gd.render(g, rev, window), None) for g in self.guards]
        return results

    def _write_state(self, model: str, state: ro.State) -> None:
        self.registry.set_model_tag(model, ROLLOUT_TAG, state.to_json())

    def _carry_out(self, model: str, d: ro.Decision, before: ro.State | None) -> None:
        if d.kind in (ro.IDLE,):
            return
        if d.kind == ro.WAIT:
            if d.state != before:  # what was seen, for status and a new leader
                self._write_state(model, d.state)
            return
        if d.kind in (ro.START, ro.ADVANCE):
            # state first: a crash before the traffic tag is repaired by SET_TRAFFIC
            self._write_state(model, d.state)
            self.registry.set_model_tag(model, CANARY_TRAFFIC_TAG, str(d.state.percent))
            log.info("rollout of %s v%s: %s", model, d.state.version, d.reason)
        elif d.kind == ro.SET_TRAFFIC:
            self.registry.set_model_tag(model, CANARY_TRAFFIC_TAG, str(d.state.percent))
        elif d.kind == ro.NOTICE:
            self._write_state(model, d.state)
            log.warning("rollout of %s stopped: %s", model, d.reason)
        elif d.kind == ro.COMPLETE_NOW:
            self._complete(model, d.state)
        elif d.kind == ro.ABORT_NOW:
            self._abort(model, d.state)

    def _guarded(self, model: str, state: ro.State):
        """Take the promotion lease and re-check that the canary is still this version."""
        lease = Lease.of(self.settings, self.registry, model)
        lease.acquire()
        now = self.registry.registered_model(model)
        if now.aliases.get(self.settings.canary_alias) != state.version:
            lease.release()
            return None, now
        return lease, now

    def _complete(self, model: str, state: ro.State) -> None:
        s = self.settings
        lease, now = self._guarded(model, state)
        if lease is None:
            return  # someone moved the canary meanwhile: the next tick notices
        try:
            before = now.aliases.get(s.alias)
            self.registry.set_alias(model, s.alias, state.version)
            self.registry.delete_alias(model, s.canary_alias)
            self.registry.delete_model_tag(model, CANARY_TRAFFIC_TAG)
            entry = history.entry(
                history.ROLLOUT_COMPLETE,
                s.alias,
                before,
                state.version,
                reason=f"rollout passed steps {','.join(map(str, state.steps))}",
                canary_alias=s.canary_alias,
                guards=state.last,
            )
            record_history(s, self.registry, model, now.tags.get(history.HISTORY_TAG), entry)
            self._write_state(model, state)
        finally:
            lease.release()
        log.info("rollout of %s complete: version %s is %s", model, state.version, s.alias)

    def _abort(self, model: str, state: ro.State) -> None:
        s = self.settings
        lease, now = self._guarded(model, state)
        if lease is None:
            return
        try:
            self.registry.delete_alias(model, s.canary_alias)
            self.registry.delete_model_tag(model, CANARY_TRAFFIC_TAG)
            entry = history.entry(
                history.ROLLOUT_ABORT,
                s.canary_alias,
                state.version,
                None,
                reason=state.reason,
                step=state.step + 1,
                percent=state.percent,
                guards=state.last,
            )
            record_history(s, self.registry, model, now.tags.get(history.HISTORY_TAG), entry)
            self._write_state(model, state)
        finally:
            lease.release()
        log.warning("rollout of %s aborted at %s%%: %s", model, state.percent, state.reason)


def rollout_models(settings: Settings, registry) -> list[str]:
    """Models the daemon drives: those with a canary alias or a running rollout."""
    out = []
    for rm in registry.registered_models(None):
        state = ro.State.from_json(rm.tags.get(ROLLOUT_TAG))
        if settings.canary_alias in rm.aliases or (state and state.status == ro.RUNNING):
            out.append(rm.name)
    return out
