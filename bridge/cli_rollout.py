"""`bridge rollout`: drive one model's canary through its steps from a shell or CI job."""

from __future__ import annotations

import json
import time

import click

from bridge.cli import Context, pass_ctx, tracking_option
from bridge.errors import UsageError

# exit codes by the rollout's end state (docs/rollout.md)
_EXIT = {"complete": 0, "aborted": 1, "overridden": 1}


@click.command("rollout")
@click.argument("model")
@click.option("--watch", is_flag=True, help="Keep going until the rollout completes or aborts.")
@click.option(
    "--prometheus-url",
    metavar="URL",
    help="Prometheus for the guards [env: BRIDGE_PROMETHEUS_URL].",
)
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="A line per step for people, or one JSON object per line.",
)
@click.option("--kubeconfig", metavar="FILE", help="Kubeconfig [env: KUBECONFIG].")
@click.option("--context", "kube_context", metavar="NAME", help="Kubeconfig context.")
@tracking_option
@pass_ctx
def rollout(ctx: Context, model, watch, output, **flags):
    """Move MODEL's canary one step (or, with --watch, all the way) with guardrails.

    Each step (BRIDGE_ROLLOUT_STEPS, default 10,50,100) runs for the bake time
    (BRIDGE_ROLLOUT_BAKE), then every guard (BRIDGE_ROLLOUT_GUARDS) is queried in
    Prometheus: all pass → next step, and at 100 the canary becomes champion;
    a failing guard, or no data past BRIDGE_ROLLOUT_GRACE → the canary is removed.
    The state lives in the registry (tag bridge.rollout): run it again, or let
    `bridge serve` carry on, and it resumes where it stands. Exits 0 when complete,
    1 when aborted or ended by a manual promote/rollback.

    \b
    Example:
      bridge promote fraud --version 8 --canary 10
      bridge rollout fraud --watch --prometheus-url http://prometheus:9090
    """
    settings = ctx.settings(**flags)
    from bridge.registry import PromotionRegistry
    from bridge.rollout_driver import RolloutDriver

    driver = RolloutDriver(settings, PromotionRegistry(settings))
    last_key, last_reason = None, None
    while True:
        started = time.monotonic()
        result = driver.tick(model)
        if result.view is None:
            raise UsageError(
                f"model {model!r} has no canary ({settings.canary_alias!r} is not set)",
                hint=f"start one: bridge promote {model} --version N --canary 10",
            )
        status, reason = result.view["status"], result.decision.reason
        key = (status, result.view["step"])
        if key != last_key or (reason and reason != last_reason):  # a line per step or event
            if output == "json":
                click.echo(
                    json.dumps({"model": model, "decision": result.decision.kind, **result.view})
                )
            else:
                click.echo(result.line)
        last_key, last_reason = key, reason
        if status in _EXIT:
            return _EXIT[status]
        if not watch:
            return 0
        # a fixed rate: the next check is one interval after this one began
        wait = min(result.decision.wait or settings.rollout_interval, settings.rollout_interval)
        time.sleep(max(0.05, wait - (time.monotonic() - started)))
