"""Prometheus metrics of the daemon (``prometheus-client``, in the ``daemon`` extra).

Each daemon owns its own registry (no process-global state), so tests can run
several in one process. Metric names are documented in docs/daemon.md.
"""

from __future__ import annotations

import time


class Metrics:
    def __init__(self):
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            disable_created_metrics,
        )

        disable_created_metrics()  # the *_created series only add noise here

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.syncs = Counter(
            "bridge_syncs_total",
            "Reconcile passes, by trigger (webhook, poll) and result (ok, partial, failed).",
            ["trigger", "result"],
            registry=r,
        )
        self.model_results = Counter(
            "bridge_model_results_total",
            "Per-model outcomes of reconcile passes (synced, unchanged, removed, failed).",
            ["state"],
            registry=r,
        )
        self.latency = Histogram(
            "bridge_sync_duration_seconds",
            "Duration of one reconcile pass.",
            ["trigger"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.bytes_copied = Counter(
            "bridge_bytes_copied_total",
            "Bytes copied from MLflow to the serving store.",
            registry=r,
        )
        self.errors = Counter(
            "bridge_errors_total",
            "Errors by kind (temporary, permanent, usage, check, internal) and source.",
            ["kind", "source"],
            registry=r,
        )
        self.last_success = Gauge(
            "bridge_last_successful_sync_timestamp_seconds",
            "Unix time of the last reconcile pass that finished without errors.",
            registry=r,
        )
        self.models = Gauge(
            "bridge_models",
            "Approved models by state after the last full pass: in_sync or out_of_sync.",
            ["state"],
            registry=r,
        )
        self.webhooks = Counter(
            "bridge_webhook_requests_total",
            "Webhook deliveries by outcome (accepted, ignored, forwarded, rejected_<reason>).",
            ["outcome"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "bridge_work_queue_models", "Models waiting in the work queue.", registry=r
        )
        self.leader = Gauge(
            "bridge_leader", "1 while this replica holds the leader Lease, else 0.", registry=r
        )
        self.rollout_percent = Gauge(
            "bridge_rollout_traffic_percent",
            "Canary traffic percent of the running rollout step (0 once it ended).",
            ["model"],
            registry=r,
        )
        self.rollout_step = Gauge(
            "bridge_rollout_step", "Step (1-based) of the model's rollout.", ["model"], registry=r
        )
        self.rollout_guard = Gauge(
            "bridge_rollout_guard_value",
            "Last value of each rollout guard's query (NaN: no data).",
            ["model", "guard"],
            registry=r,
        )
        self.rollout_transitions = Counter(
            "bridge_rollout_transitions_total",
            "Rollout decisions that changed something (start, advance, complete, abort, notice).",
            ["decision"],
            registry=r,
        )
        for state in ("in_sync", "out_of_sync"):
            self.models.labels(state).set(0)

    def observe_rollout(self, result) -> None:
        """One rollout tick (bridge.rollout_driver.TickResult)."""
        view = result.view or {}
        if not view:
            return
        running = view["status"] == "running"
        self.rollout_percent.labels(result.model).set(view["percent"] if running else 0)
        self.rollout_step.labels(result.model).set(view["step"])
        for g in view.get("last_guards") or []:
            value = float("nan") if g["value"] is None else g["value"]
            self.rollout_guard.labels(result.model, g["guard"]).set(value)
        if result.decision.kind not in ("idle", "wait", "evaluate"):
            self.rollout_transitions.labels(result.decision.kind).inc()

    def observe_report(self, report, trigger: str, seconds: float, *, full: bool) -> None:
        failed = [r for r in report.results if r.error is not None]
        ok = [r for r in report.results if r.error is None]
        result = "ok" if not failed else ("partial" if ok else "failed")
        self.syncs.labels(trigger, result).inc()
        self.latency.labels(trigger).observe(seconds)
        self.bytes_copied.inc(report.bytes_copied)
        for r in report.results:
            self.model_results.labels(r.state).inc()
        for err in report.errors:
            self.errors.labels(err.kind, "model").inc()
        if not failed:
            self.last_success.set(time.time())
        if full:
            live = [r for r in report.results if r.state != "removed"]
            self.models.labels("in_sync").set(sum(1 for r in live if r.error is None))
            self.models.labels("out_of_sync").set(sum(1 for r in live if r.error is not None))

    def observe_pass_error(self, kind: str, trigger: str, seconds: float) -> None:
        self.syncs.labels(trigger, "failed").inc()
        self.latency.labels(trigger).observe(seconds)
        self.errors.labels(kind, "pass").inc()

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
