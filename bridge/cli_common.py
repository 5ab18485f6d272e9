"""What every command shares: the click Context, the shared options and data output.

The command modules (bridge/cli.py and bridge/cli_*.py) import from here, never from
each other, so none of them needs another to load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from bridge.settings import DRY_RUN_MODES, Settings, load_settings_with_sources

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DATA_FORMATS = ("json", "yaml")


class Context:
    def __init__(
        self, config: str | None, log_format: str | None, log_level: str | None, debug: bool
    ):
        self.config = config
        self.flags = {"log_format": log_format, "log_level": log_level}
        self.debug = debug
        self.sources: Mapping[str, str] = {}

    def settings(self, **flags) -> Settings:
        """Settings with this command's flags on top; logging configured from them."""
        from bridge.log import setup_logging

        merged = {**self.flags, **{k: v for k, v in flags.items() if v is not None}}
        settings, self.sources = load_settings_with_sources(merged, config_file=self.config)
        setup_logging(settings.log_format, "DEBUG" if self.debug else settings.log_level)
        return settings


pass_ctx = click.make_pass_decorator(Context)


def print_data(data: Any, output: str) -> None:
    """Data for scripts, as ``-o json`` or ``-o yaml`` asked."""
    if output == "yaml":
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=True, allow_unicode=True), nl=False)
    else:
        click.echo(json.dumps(data, indent=2, sort_keys=True))


def tracking_option(f):
    return click.option(
        "--tracking-uri", metavar="URI", help="MLflow tracking server [env: MLFLOW_TRACKING_URI]."
    )(f)


def target_options(f):
    f = click.option(
        "--target-endpoint-url",
        metavar="URL",
        help="S3 endpoint of the target store [env: BRIDGE_TARGET_ENDPOINT_URL].",
    )(f)
    return click.option(
        "--target-uri",
        metavar="S3URI",
        help="Where synced models go, s3://bucket/prefix [env: BRIDGE_TARGET_URI].",
    )(f)


def output_option(default: str, help: str = "Report format on stdout."):
    """-o/--output DEFAULT|json|yaml: for people by default, JSON or YAML for scripts."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice([default, *(f for f in DATA_FORMATS if f != default)]),
        default=default,
        show_default=True,
        help=help,
    )


def models_option(f):
    return click.option(
        "--model",
        "models",
        multiple=True,
        metavar="NAME",
        help="Only this registered model (repeatable).",
    )(f)


def namespace_option(f):
    return click.option(
        "-n",
        "--namespace",
        metavar="NS",
        help="Namespace of emitted resources [env: BRIDGE_NAMESPACE].",
    )(f)


def serving_options(f):
    f = namespace_option(f)
    return click.option(
        "--alias", metavar="ALIAS", help="Approval alias [env: BRIDGE_ALIAS, default: champion]."
    )(f)


def kube_options(f):
    """--kubeconfig / --context, as kubectl spells them, for commands that reach a cluster."""
    f = click.option(
        "--context",
        "kube_context",
        metavar="NAME",
        help="Kubeconfig context [env: BRIDGE_KUBE_CONTEXT].",
    )(f)
    return click.option(
        "--kubeconfig",
        metavar="FILE",
        help="Kubeconfig file [env: BRIDGE_KUBECONFIG, KUBECONFIG; default: in-cluster or "
        "~/.kube/config].",
    )(f)


def dry_run_option(f):
    """kubectl's --dry-run=server|client|none; a bare --dry-run means server."""
    return click.option(
        "--dry-run",
        type=click.Choice(DRY_RUN_MODES),
        is_flag=False,
        flag_value="server",
        default=None,
        help="With --apply: server (the API server checks every change, keeps none), client "
        "(nothing is sent but reads) or none; bare --dry-run is server [env: BRIDGE_DRY_RUN].",
    )(f)
