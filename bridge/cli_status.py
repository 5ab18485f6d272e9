"""`bridge status`: the command. Collection and judgement live in bridge.status."""

from __future__ import annotations

import os

import click

from bridge.cli_common import (
    DATA_FORMATS,
    Context,
    kube_options,
    models_option,
    namespace_option,
    output_option,
    pass_ctx,
    print_data,
    target_options,
    tracking_option,
)
from bridge.status_text import format_table


@click.command("status")
@models_option
@output_option("table", help="A table for people, JSON or YAML for scripts.")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False),
    help="GitOps directory with the emitted YAML [env: BRIDGE_OUTPUT_DIR].",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Re-read and re-hash every published file (default: check names and sizes).",
)
@click.option(
    "--alias", metavar="ALIAS", help="Approval alias [env: BRIDGE_ALIAS, default: champion]."
)
@namespace_option
@kube_options
@tracking_option
@target_options
@pass_ctx
def status(ctx: Context, models, output, output_dir, verify, **flags):
    """Show, per model, the registry, the serving store and what is served.

    States: in_sync, pending (approved, not published or emitted yet),
    drifted (what is served or stored differs from the registry), broken
    (published data fails verification), orphaned (served, no longer
    approved). When bridge applies to the cluster (BRIDGE_APPLY), each live
    InferenceService's KServe status adds: serving (with its URL), not_ready or
    failed_to_load. Exits 1 when any model is drifted or broken, or does not serve.

    \b
    Example:
      bridge status --output-dir gitops/models
      bridge status --model fraud-detector --output json --verify
    """
    settings = ctx.settings(output_dir=output_dir, **flags)
    from bridge.status import exit_code, status_report

    report = status_report(settings, list(models) or None, verify=verify)
    if output in DATA_FORMATS:
        print_data(report, output)
    else:
        colour = click.get_text_stream("stdout").isatty() and not os.environ.get("NO_COLOR")
        click.echo(format_table(report, colour=colour), nl=False, color=colour)
    return exit_code(report)
