"""The command line: thin. Parsing and printing here, the work in the modules.

Heavy libraries (mlflow, boto3, lightkube, kfp) are imported inside the
commands that need them, so `bridge --help` starts fast.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import NoReturn

import click

from bridge import __version__
from bridge.cli_common import (
    CONTEXT_SETTINGS,
    Context,
    dry_run_option,
    kube_options,
    models_option,
    output_option,
    pass_ctx,
    print_data,
    serving_options,
    target_options,
    tracking_option,
)
from bridge.errors import BridgeError, InternalError, UsageError
from bridge.settings import Settings

log = logging.getLogger("bridge")


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="bridge")
@click.option(
    "--config",
    "config",
    metavar="FILE",
    envvar="BRIDGE_CONFIG",
    help="Optional TOML config file [env: BRIDGE_CONFIG].",
)
@click.option(
    "--log-format",
    type=click.Choice(["human", "json"]),
    help="Log format [env: BRIDGE_LOG_FORMAT].",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log level [env: BRIDGE_LOG_LEVEL].",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx, config, log_format, log_level, debug):
    """Sync approved MLflow models to KServe, and gate their promotion.

    \b
    Settings: flags > environment > --config FILE > defaults.
    Exit codes: 0 ok, 1 a gate or check said no, 2 bad usage or
    configuration, 3 an outside system failed (retryable), 4 an
    internal error (a bug in bridge: please report it).
    """
    ctx.obj = Context(config, log_format, log_level, debug)


@cli.command()
@click.option("--once", is_flag=True, help="Run one reconcile pass and exit.")
@click.option(
    "--verify",
    is_flag=True,
    help="Also re-hash every published target, repair any that changed, then exit.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False),
    help="GitOps directory for the YAML [env: BRIDGE_OUTPUT_DIR].",
)
@models_option
@output_option("text")
@click.option(
    "--apply",
    is_flag=True,
    default=None,
    help="Server-side apply to the cluster and prune stale bridge-owned InferenceServices "
    "[env: BRIDGE_APPLY].",
)
@dry_run_option
@kube_options
@click.option(
    "--allow-mass-removal",
    is_flag=True,
    default=None,
    help="Let this run remove more than BRIDGE_MAX_REMOVAL_FRACTION of the served models, "
    "or all of them [env: BRIDGE_ALLOW_MASS_REMOVAL].",
)
@tracking_option
@target_options
@serving_options
@pass_ctx
def sync(ctx: Context, once, verify, output_dir, models, output, **flags):
    """Copy approved versions to the serving store and emit InferenceServices.

    Finds every registered model whose approval alias (default `champion`)
    points at a version, copies that version's artifacts to
    <BRIDGE_TARGET_URI>/<model>/<version>/, verifies every file's SHA-256,
    and only then writes the InferenceService YAML. Without --once it
    keeps polling every BRIDGE_POLL_INTERVAL seconds. A pass that would
    remove more than BRIDGE_MAX_REMOVAL_FRACTION of the served models (or
    all of them) removes nothing and exits 1, unless --allow-mass-removal.

    \b
    Example:
      bridge sync --once --output-dir gitops/models
      bridge sync --once --model fraud-detector --output json
      bridge sync --once --apply --dry-run=server -n models --context prod
      bridge sync --verify
    """
    settings = ctx.settings(output_dir=output_dir, **flags)
    from bridge.runner import run_sync

    return run_sync(
        settings, list(models) or None, settings.output_dir, once=once, output=output, verify=verify
    )


@cli.command()
@click.argument("model")
@click.option("--version", "version", required=True, metavar="N", help="Model version to render.")
@output_option("yaml", help="Format of the InferenceService on stdout.")
@tracking_option
@target_options
@serving_options
@pass_ctx
def render(ctx: Context, model, version, output, **flags):
    """Print the InferenceService YAML for one model version.

    Reads the registry and the store only; writes nothing. A version that is
    not published yet renders with its future storageUri and a warning.

    \b
    Example:
      bridge render fraud-detector --version 3
      bridge render fraud-detector --version 3 -o json | jq .spec
    """
    settings = ctx.settings(**flags)
    from bridge.runner import render_version

    text = render_version(settings, model, version)
    if output == "json":
        import yaml

        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        print_data(docs[0] if len(docs) == 1 else docs, output)
    else:
        click.echo(text, nl=False)
    return 0


@cli.command("config")
@click.option(
    "--reference", is_flag=True, help="Print the reference table of all settings (Markdown)."
)
@output_option("text")
@pass_ctx
def config_cmd(ctx: Context, reference, output):
    """Print the effective settings and where each came from.

    Sources, highest first: a flag, an environment variable, the --config
    file, the default. Credentials inside values (the user:password@ or
    token@ of a URL) are masked as ***; secrets are never settings.

    \b
    Example:
      BRIDGE_ALIAS=prod bridge config
      bridge config -o json
      bridge config --reference
    """
    if reference:
        click.echo("| setting | environment | default | meaning |\n|---|---|---|---|")
        for row in Settings().describe():
            env = ", ".join(f"`{e.strip()}`" for e in row["env"].split(","))
            default = f"`{row['default']}`" if row["default"] else ""
            click.echo(f"| {row['name']} | {env} | {default} | {row['help']} |")
        return 0
    from bridge.redact import redact_value

    settings = ctx.settings()
    rows = [
        (row["name"], redact_value(getattr(settings, row["name"])), ctx.sources[row["name"]])
        for row in settings.describe()
    ]
    if output in ("json", "yaml"):
        print_data({name: {"value": v, "source": src} for name, v, src in rows}, output)
        return 0
    for name, value, source in rows:
        click.echo(f"{name:22} {value!s:40} [{source}]")
    return 0


def state_dir_option(f):
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False),
        envvar="BRIDGE_DEV_DIR",
        help="Where the stack's state lives [env: BRIDGE_DEV_DIR, default: ./.bridge-dev].",
    )(f)


@cli.group()
def dev():
    """The local stack: a real MLflow server (sqlite) and an S3 server.

    \b
    Example:
      bridge dev up && eval "$(bridge dev env)"
      bridge dev down
    """


@dev.command("up")
@state_dir_option
@output_option("shell", help="`export` lines for eval, or the variables as JSON or YAML.")
@pass_ctx
def dev_up(ctx: Context, state_dir, output):
    """Start MLflow + S3 on free ports and print the environment to use.

    \b
    Example:
      bridge dev up --state-dir /tmp/bridge-dev
    """
    from pathlib import Path

    from bridge import devstack

    ctx.settings()
    stack, started = devstack.up(Path(state_dir) if state_dir else None)
    if started:
        click.echo(
            f"# started MLflow at {stack.mlflow_url} and S3 at {stack.s3_url} (state: {stack.state_dir})",
            err=True,
        )
    else:
        click.echo(
            f"# already running: MLflow at {stack.mlflow_url} (pid {stack.mlflow_pid}), "
            f"S3 at {stack.s3_url} (pid {stack.s3_pid}); state in {stack.state_dir}",
            err=True,
        )
    if output == "shell":
        click.echo(devstack.shell_exports(stack.env()), nl=False)
    else:
        print_data(stack.env(), output)
    return 0


@dev.command("env")
@state_dir_option
@output_option("shell", help="`export` lines for eval, or the variables as JSON or YAML.")
@pass_ctx
def dev_env(ctx: Context, state_dir, output):
    """Print the environment of the running stack (for eval).

    \b
    Example:
      eval "$(bridge dev env)"
      bridge dev env -o json | jq -r .MLFLOW_TRACKING_URI
    """
    from pathlib import Path

    from bridge import devstack

    ctx.settings()
    path = Path(state_dir) if state_dir else devstack.default_state_dir()
    stack = devstack.read_state(path.resolve())
    if stack is None or not stack.is_running():
        raise UsageError(f"no dev stack is running in {path}", hint="start one with: bridge dev up")
    if output == "shell":
        click.echo(devstack.shell_exports(stack.env()), nl=False)
    else:
        print_data(stack.env(), output)
    return 0


@dev.command("down")
@state_dir_option
@pass_ctx
def dev_down(ctx: Context, state_dir):
    """Stop exactly the processes `bridge dev up` started.

    \b
    Example:
      bridge dev down
    """
    from pathlib import Path

    from bridge import devstack

    ctx.settings()
    stack = devstack.down(Path(state_dir) if state_dir else None)
    if stack is None:
        click.echo("no dev stack was running", err=True)
    else:
        click.echo(f"stopped MLflow (pid {stack.mlflow_pid}) and S3 (pid {stack.s3_pid})", err=True)
    return 0


def _print_error(line: str, debug: bool) -> None:
    """The error line on stderr; with --debug the traceback first. Both redacted."""
    from bridge.redact import redact

    if debug:
        click.echo(redact(traceback.format_exc()).rstrip("\n"), err=True)
    click.echo(redact(line), err=True)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        result = cli.main(args=args, prog_name="bridge", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except BridgeError as exc:
        _print_error(f"error: {exc.one_line()}", debug)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except ValueError as exc:
        bad_env = _bad_mlflow_variable(exc)
        if bad_env is None:
            _internal_error(exc, debug)
        _print_error(f"error: {bad_env.one_line()}", debug)
        sys.exit(bad_env.exit_code)
    except Exception as exc:  # noqa: BLE001 - last resort: a bug, one line unless --debug
        _internal_error(exc, debug)
    sys.exit(result if isinstance(result, int) else 0)


def _bad_mlflow_variable(exc: ValueError) -> UsageError | None:
    """MLflow reads its MLFLOW_* variables lazily and raises a bare ValueError
    ("Failed to convert '0.1' for MLFLOW_X: ...", mlflow/environment_variables.py): that is
    the user's configuration, not a bug in bridge."""
    text = " ".join(str(exc).split())
    if text.startswith("Failed to convert") and " for MLFLOW_" in text:
        return UsageError(text, hint="fix that MLflow environment variable")
    return None


def _internal_error(exc: Exception, debug: bool) -> NoReturn:
    line = " ".join(str(exc).split()) or type(exc).__name__
    _print_error(
        f"error: internal error {type(exc).__name__}: {line} (a bug: rerun with --debug "
        "and report it)",
        debug,
    )
    sys.exit(InternalError.exit_code)


# Commands that live in their own modules.
from bridge.cli_credentials import credentials  # noqa: E402
from bridge.cli_promote import history, promote, rollback  # noqa: E402
from bridge.cli_rollout import rollout  # noqa: E402
from bridge.cli_serve import serve, webhook  # noqa: E402
from bridge.cli_status import status as status_command  # noqa: E402

for _command in (promote, rollback, history, rollout, status_command, serve, webhook, credentials):
    cli.add_command(_command)
