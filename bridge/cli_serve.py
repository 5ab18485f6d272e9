"""`bridge serve` and `bridge webhook register`: the daemon's command line (thin)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from bridge.cli_common import (
    kube_options,
    pass_ctx,
    serving_options,
    target_options,
    tracking_option,
)
from bridge.errors import UsageError

log = logging.getLogger(__name__)

WEBHOOK_NAME = "mlflow-kubeflow-bridge"


def read_webhook_secret(secret_file: str | None) -> str | None:
    """--webhook-secret-file, else BRIDGE_WEBHOOK_SECRET_FILE, else BRIDGE_WEBHOOK_SECRET."""
    path = secret_file or os.environ.get("BRIDGE_WEBHOOK_SECRET_FILE")
    if path:
        try:
            secret = Path(path).read_text().strip()
        except OSError as exc:
            raise UsageError(
                f"cannot read the webhook secret file {path}: {exc.strerror}",
                hint="mount the Secret there or set BRIDGE_WEBHOOK_SECRET",
            ) from None
        if not secret:
            raise UsageError(f"the webhook secret file {path} is empty")
        return secret
    return os.environ.get("BRIDGE_WEBHOOK_SECRET") or None


def leader_election_enabled(value: str) -> bool:
    v = value.strip().lower()
    if v == "auto":
        return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise UsageError(
        f"leader election {value!r} is not one of: auto, true, false",
        hint="fix BRIDGE_LEADER_ELECTION",
    )


secret_file_option = click.option(
    "--webhook-secret-file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="File holding the webhook secret [env: BRIDGE_WEBHOOK_SECRET_FILE; "
    "or the secret itself in BRIDGE_WEBHOOK_SECRET].",
)


@click.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False),
    help="GitOps directory for the YAML [env: BRIDGE_OUTPUT_DIR].",
)
@secret_file_option
@click.option(
    "--leader-election",
    type=click.Choice(["auto", "true", "false"]),
    help="Elect one active replica via a Lease [env: BRIDGE_LEADER_ELECTION, default: auto].",
)
@kube_options
@tracking_option
@target_options
@serving_options
@pass_ctx
def serve(ctx, host, port, output_dir, webhook_secret_file, leader_election, **flags):
    """Run the sync daemon: MLflow webhooks, poll fallback, metrics, leader election.

    \b
    Endpoints:
      POST /webhooks/mlflow   signed MLflow webhook deliveries (MLflow >= 3.3)
      GET  /metrics           Prometheus metrics
      GET  /healthz /readyz   liveness and readiness probes

    Every verified webhook reconciles just its model within a second; a full
    pass runs every BRIDGE_POLL_INTERVAL seconds whatever happens. SIGTERM
    stops taking work, lets the current copy finish and releases the Lease.

    \b
    Example:
      BRIDGE_WEBHOOK_SECRET=... bridge serve --port 8080 --output-dir gitops/models
    """
    settings = ctx.settings(output_dir=output_dir, leader_election=leader_election, **flags)
    settings.require("tracking_uri", "target_uri")
    secret = read_webhook_secret(webhook_secret_file)

    from bridge.daemon import Daemon, DaemonOptions
    from bridge.runner import build_reconciler

    elector = None
    if leader_election_enabled(settings.leader_election):
        from bridge.lease import LeaderElector, LeaseLock, default_identity

        namespace = settings.lease_namespace or settings.namespace
        lock = LeaseLock(
            settings.lease_name,
            namespace,
            kubeconfig=settings.kubeconfig,
            context=settings.kube_context,
        )
        lock.api  # noqa: B018 - load the cluster configuration now: a bad one is exit 2
        elector = LeaderElector(
            lock,
            default_identity(),
            lease_duration=settings.lease_duration,
            renew_period=settings.lease_duration / 3,
            leader_url=settings.advertise_url,
        )
    options = DaemonOptions(host, port, settings.output_dir, secret)
    daemon = Daemon(settings, options, lambda: build_reconciler(settings), elector=elector)
    return daemon.serve_until_signalled()


@click.group()
def webhook():
    """Manage the MLflow webhook that notifies the daemon.

    \b
    Example:
      bridge webhook register --url http://mlflow-bridge.mlops:8080/webhooks/mlflow
    """


@webhook.command("register")
@click.option("--url", required=True, metavar="URL", help="The daemon's webhook URL.")
@click.option(
    "--name", default=WEBHOOK_NAME, show_default=True, help="Webhook name in MLflow (the key)."
)
@secret_file_option
@tracking_option
@pass_ctx
def register(ctx, url, name, webhook_secret_file, **flags):
    """Create or update the MLflow webhook (by name) with the daemon's URL and secret.

    Subscribes to alias, version, version-tag and model-created events. Run it
    again after rotating the secret.

    \b
    Example:
      BRIDGE_WEBHOOK_SECRET=... bridge webhook register \\
          --url http://mlflow-bridge.mlops.svc:8080/webhooks/mlflow
    """
    settings = ctx.settings(**flags)
    settings.require("tracking_uri")
    secret = read_webhook_secret(webhook_secret_file)
    if not secret:
        raise UsageError(
            "no webhook secret", hint="set BRIDGE_WEBHOOK_SECRET or pass --webhook-secret-file"
        )
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"webhook URL {url!r} is not an http(s) URL")
    from bridge.webhook_admin import register_webhook

    webhook_id, created = register_webhook(settings, name, url, secret)
    click.echo(f"{'created' if created else 'updated'} webhook {name!r} ({webhook_id}) -> {url}")
    return 0
