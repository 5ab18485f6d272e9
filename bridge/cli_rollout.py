"""`bridge rollout`: drive one model's canary through its steps from a shell or CI job."""

from __future__ import annotations

import json
import time

import click

from bridge.cli_common import (
    Context,
    dry_run_option,
    kube_options,
    output_option,
    pass_ctx,
    print_data,
    serving_options,
    target_options,
    tracking_option,
)
from bridge.errors import UsageError
from bridge.rollout_daemon import CHANGES

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
@output_option(
    "text", help="A line per step for people; one JSON object per line, or a YAML document."
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False),
    help="After each step, rewrite MODEL's InferenceService YAML here [env: BRIDGE_OUTPUT_DIR].",
)
@click.option(
    "--apply",
    is_flag=True,
    default=None,
    help="After each step, server-side apply MODEL's InferenceService [env: BRIDGE_APPLY].",
)
@dry_run_option
@kube_options
@tracking_option
@target_options
@serving_options
@pass_ctx
def rollout(ctx: Context, model, watch, output, output_dir, **flags):
    """Move MODEL's canary one step (or, with --watch, all the way) with guardrails.

    Each step (BRIDGE_ROLLOUT_STEPS, default 10,50,100) runs for the bake time
    (BRIDGE_ROLLOUT_BAKE), then every guard (BRIDGE_ROLLOUT_GUARDS) is queried in
    Prometheus: all pass → next step, and at 100 the canary becomes champion;
    a failing guard, or no data past BRIDGE_ROLLOUT_GRACE → the canary is removed.
    The state lives in the registry (tag bridge.rollout): run it again, or let
    `bridge serve` carry on, and it resumes where it stands. Exits 0 when complete,
    1 when aborted or ended by a manual promote/rollback.

    With --output-dir and/or --apply, each step also runs the one-model sync pass
    (as `bridge sync --once --model MODEL` does) that rewrites or applies MODEL's
    InferenceService. Without either, only the registry tags move and something
    else must render them: `bridge serve`, or `bridge sync` in the GitOps job.

    \b
    Example:
      bridge promote fraud --version 8 --canary 10
      bridge rollout fraud --watch --apply --prometheus-url http://prometheus:9090
      bridge rollout fraud --output-dir gitops/models   # one step per CI run
    """
    settings = ctx.settings(output_dir=output_dir, **flags)
    from bridge.registry import PromotionRegistry
    from bridge.rollout_driver import RolloutDriver

    driver = RolloutDriver(settings, PromotionRegistry(settings))
    render = _Renderer(settings, model) if settings.output_dir or settings.apply else None
    last_key, last_reason = None, None
    while True:
        started = time.monotonic()
        result = driver.tick(model)
        if result.view is None:
            raise UsageError(
                f"model {model!r} has no canary ({settings.canary_alias!r} is not set)",
                hint=f"start one: bridge promote {model} --version N --canary 10",
            )
        if render is not None:
            render(result.decision.kind in CHANGES)
        status, reason = result.view["status"], result.decision.reason
        key = (status, result.view["step"])
        if key != last_key or (reason and reason != last_reason):  # a line per step or event
            line = {"model": model, "decision": result.decision.kind, **result.view}
            if output == "json":
                click.echo(json.dumps(line, sort_keys=True))
            elif output == "yaml":
                click.echo("---")
                print_data(line, output)
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


class _Renderer:
    """The daemon's one-model sync pass, run after each change the rollout makes.

    The first call catches up on a change an earlier, interrupted run made; a pass
    that fails is retried at the next tick (until then the rollout waits, since it
    judges a step only once the InferenceService serves it).
    """

    def __init__(self, settings, model: str):
        from bridge.runner import build_reconciler

        self.reconciler = build_reconciler(settings)  # config errors before any step
        self.settings, self.model = settings, model
        self.pending = True

    def __call__(self, changed: bool) -> None:
        from bridge.errors import TemporaryError
        from bridge.log import redact

        self.pending = self.pending or changed
        if not self.pending:
            return
        try:
            report = self.reconciler.run_once([self.model], self.settings.output_dir)
        except TemporaryError as exc:  # retried at the next tick, like the daemon's pass
            click.echo(f"error: {redact(exc.one_line())}", err=True)
            return
        for err in [r.error for r in report.results if r.error] + getattr(report, "refused", []):
            click.echo(f"error: {redact(err.one_line())}", err=True)
        self.pending = report.exit_code != 0
