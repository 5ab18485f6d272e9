"""The daemon's rollout loop: while this replica leads, tick every model with a canary.

A tick that changes the canary's traffic or aliases queues the model for a sync
pass, so the InferenceService (apply mode) or the GitOps directory follows at
once. The rollout's state is in the registry, so a new leader simply carries on.
"""

from __future__ import annotations

import logging
import time

from bridge import rollout as ro
from bridge.errors import BridgeError

log = logging.getLogger(__name__)

# Decisions that change what should be served.
CHANGES = {ro.START, ro.ADVANCE, ro.SET_TRAFFIC, ro.COMPLETE_NOW, ro.ABORT_NOW}


class RolloutLoop:
    def __init__(self, daemon):
        from bridge.registry import PromotionRegistry
        from bridge.rollout_driver import RolloutDriver

        self.daemon = daemon
        self.registry = PromotionRegistry(daemon.settings)
        self.driver = RolloutDriver(daemon.settings, self.registry)  # config errors: at start
        self.views: dict[str, dict] = {}  # model -> last State.view(), for /status

    def run(self) -> None:
        d = self.daemon
        took = 0.0
        while not d.stopping.wait(max(0.05, d.settings.rollout_interval - took)):
            started = time.monotonic()
            if d.is_leader:
                self.tick_all()
            took = time.monotonic() - started  # a fixed rate, not interval + work

    def tick_all(self) -> None:
        from bridge.rollout_driver import rollout_models

        try:
            models = rollout_models(self.daemon.settings, self.registry)
        except BridgeError as exc:
            log.error("rollouts: cannot list models: %s", exc.one_line())
            return
        for model in models:
            try:
                result = self.driver.tick(model)
            except BridgeError as exc:  # one model's trouble must not stop the others
                log.error("rollout of %s: %s", model, exc.one_line())
                self.daemon.metrics.errors.labels(exc.kind, "rollout").inc()
                continue
            self.daemon.metrics.observe_rollout(result)
            if result.view is not None:
                self.views[model] = result.view
            if result.decision.kind in CHANGES:
                log.info("%s", result.line)
                self.daemon.queue.put(model)
