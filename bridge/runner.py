"""Glue between the CLI and the core: build the edges, run, print the report."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from bridge.errors import BridgeError, worst_exit_code
from bridge.retry import backoff_delay
from bridge.settings import Settings

log = logging.getLogger(__name__)


def build_reconciler(settings: Settings):
    from bridge.registry import Registry, lean_mlflow_imports
    from bridge.store import Store
    from bridge.sync import Reconciler

    settings.require("tracking_uri", "target_uri")
    lean_mlflow_imports(settings)
    return Reconciler(settings, Registry(settings), Store(settings))


def shown_name(name: str) -> str:
    """A model name for a one-line report: quoted and escaped when it holds odd characters."""
    return name if name.isprintable() else repr(name)


def print_report(report, output: str) -> None:
    """The report on stdout; each failure also as one `error:` line on stderr."""
    from bridge.log import redact

    for err in [r.error for r in report.results if r.error] + getattr(report, "refused", []):
        click.echo(f"error: {redact(err.one_line())}", err=True)
    if output in ("json", "yaml"):
        from bridge.cli_common import print_data

        print_data([r.as_dict() for r in report.results], output)
        return
    if not report.results:
        click.echo("no approved models found")
    for r in report.results:
        name = shown_name(r.name)
        if r.error:
            click.echo(f"{name}: failed ({r.error.kind}): {redact(r.error.one_line())}")
        elif r.state == "removed":
            click.echo(f"{name}: removed (alias no longer set)")
        elif r.state == "held":
            click.echo(f"{name}: kept (its removal was refused, see the error above)")
        else:
            click.echo(
                f"{name}: version {r.version} {r.state} -> {r.storage_uri} ({r.bytes_copied} bytes copied)"
            )
    if report.output is not None:
        o = report.output
        click.echo(
            f"output: {len(o.written)} written, {len(o.removed)} removed, {len(o.unchanged)} unchanged"
            + (f", {len(o.held)} kept (removal refused)" if o.held else "")
        )
    if getattr(report, "cluster", None) is not None:
        c = report.cluster
        click.echo(
            f"cluster{f' ({c.dry_run} dry run)' if c.dry_run != 'none' else ''}: "
            f"{len(c.applied)} applied, "
            f"{len(c.pruned)} pruned, {len(c.skipped)} left alone (not bridge's)"
            + (f", {len(c.held)} kept (removal refused)" if c.held else "")
        )


def run_sync(
    settings: Settings, models, output_dir, *, once: bool, output: str, verify: bool = False
) -> int:
    reconciler = build_reconciler(settings)
    if once or verify:
        report = reconciler.run_once(models, output_dir, verify=verify)
        print_report(report, output)
        return report.exit_code
    return poll_forever(reconciler, models, output_dir, settings.poll_interval, output)


def poll_forever(reconciler, models, output_dir, interval: float, output: str) -> int:
    """Reconcile every ``interval`` seconds; back off with jitter while outside systems fail."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    failures = 0
    while not stop.is_set():
        try:
            report = reconciler.run_once(models, output_dir)
            print_report(report, output)
            code = report.exit_code
        except BridgeError as exc:
            log.error("sync pass failed: %s", exc.one_line())
            code = exc.exit_code
        failures = failures + 1 if code == 3 else 0
        delay = interval if not failures else backoff_delay(failures, 1.0, interval, least=0.5)
        stop.wait(delay)
    sys.stdout.flush()
    return 0


def render_version(settings: Settings, model: str, version: str) -> str:
    from bridge.names import k8s_name
    from bridge.publish import Publisher
    from bridge.registry import Registry, lean_mlflow_imports
    from bridge.serving import DesiredService, ServedVersion, inference_service, to_yaml
    from bridge.store import Store

    settings.require("tracking_uri", "target_uri")
    lean_mlflow_imports(settings)
    registry, store = Registry(settings), Store(settings)
    info = registry.model_version(model, version)
    kname = k8s_name(model)
    publisher = Publisher(store)
    published = publisher.published(kname, info.version)
    if published is None:
        log.warning(
            "%s version %s is not published yet; run `bridge sync --once` first", model, version
        )
        storage_uri = store.uri(publisher.version_prefix(kname, info.version))
        served = ServedVersion(info.version, storage_uri, "", info.run_id, info.download_uri)
    else:
        served = ServedVersion(
            info.version, published.storage_uri, published.digest, info.run_id, info.download_uri
        )
    from dataclasses import replace

    from bridge.overrides import parse_runtimes, resolve
    from bridge.runtime_fit import model_format_version
    from bridge.sync import serving_defaults, serving_limits, serving_options, supported_versions

    [registered] = registry.registered_models([model])
    runtimes = parse_runtimes(settings.runtimes)
    spec = resolve(
        model, registered.tags, serving_defaults(settings), runtimes, serving_limits(settings)
    )
    if published is not None:
        major = publisher.needs(kname, published).mlflow_major
        fmt = model_format_version(major, supported_versions(runtimes, spec))
        served = replace(served, format_version=fmt)
    resource = inference_service(
        DesiredService(model, kname, settings.alias, served, spec), serving_options(settings)
    )
    return to_yaml(resource)


__all__ = ["run_sync", "render_version", "build_reconciler", "worst_exit_code"]
