"""`bridge promote`, `bridge rollback`, `bridge history`: the promotion gate CI calls.

Thin: parse flags, call :mod:`bridge.promote`, print text / JSON / JUnit.
Never prompts; colour only on a terminal (and never with NO_COLOR set).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from bridge.cli_common import (
    DATA_FORMATS,
    output_option,
    pass_ctx,
    print_data,
    target_options,
    tracking_option,
)
from bridge.errors import BridgeError, UsageError

_STYLE = {
    "passed": ("PASS", "green"),
    "failed": ("FAIL", "red"),
    "warned": ("WARN", "yellow"),
    "skipped": ("SKIP", "bright_black"),
}


_ALIAS_RE = re.compile(r"^[A-Za-z0-9_\-]{1,255}$")


def _alias(value: str | None, settings) -> str:
    """--alias may name any alias, the canary alias included (unlike BRIDGE_ALIAS)."""
    if value is None:
        return settings.alias
    if not _ALIAS_RE.match(value) or re.fullmatch(r"[vV]\d+", value):
        raise UsageError(
            f"--alias {value!r} is not a valid MLflow alias",
            hint="letters, digits, '_' and '-'; not of the form v<digits>",
        )
    return value


def _color() -> bool | None:
    return False if os.environ.get("NO_COLOR") else None  # None: click decides (TTY only)


def _echo(text: str, **kw) -> None:
    click.echo(text, color=_color(), **kw)


def _write_junit(path: str, gates, suite: str, error: str | None) -> None:
    from bridge.gates import junit_xml

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(junit_xml(gates, suite, error))
    except OSError as exc:
        raise UsageError(f"cannot write the JUnit report {path}: {exc.strerror}") from None


@click.command()
@click.argument("model")
@click.option("--version", "version", metavar="N", help="The version to promote.")
@click.option(
    "--from-alias",
    metavar="ALIAS",
    help="Promote the version this alias points at (e.g. challenger).",
)
@click.option(
    "--alias", metavar="ALIAS", help="Alias to move [env: BRIDGE_ALIAS, default: champion]."
)
@click.option(
    "--require",
    "requirements",
    multiple=True,
    metavar='"METRIC>=VALUE"',
    help="Metric requirement on the version's source run; OP is >=, >, <=, < or ==. Repeatable.",
)
@click.option(
    "--no-regression",
    multiple=True,
    metavar="METRIC",
    help="METRIC must not be worse than on the version holding --alias. Repeatable.",
)
@click.option(
    "--lower-is-better",
    multiple=True,
    metavar="METRIC",
    help="For --no-regression: lower values of METRIC are better (loss, rmse ...). Repeatable.",
)
@click.option(
    "--tolerance",
    metavar="X",
    help="Allowed regression: absolute (0.01) or relative to the current value (2%). Default 0.",
)
@click.option(
    "--smoke", is_flag=True, help="Load the model with pyfunc and predict on its input example."
)
@click.option(
    "--smoke-timeout",
    type=float,
    metavar="SECONDS",
    help="Time limit of --smoke [env: BRIDGE_PROMOTE_SMOKE_TIMEOUT, default: 300].",
)
@click.option(
    "--on-missing",
    type=click.Choice(["fail", "warn"]),
    help="A missing signature or input example fails or warns [env: BRIDGE_PROMOTE_ON_MISSING, default: fail].",
)
@click.option(
    "--canary",
    type=int,
    metavar="PERCENT",
    help="Set the canary alias (default challenger) instead, with this share of traffic (1-99).",
)
@click.option("--dry-run", is_flag=True, help="Run every gate, change nothing.")
@click.option("--reason", metavar="TEXT", help="Why: kept in the history.")
@output_option("text")
@click.option(
    "--junit", metavar="FILE", help="Also write a JUnit XML report: one test case per gate."
)
@tracking_option
@target_options
@pass_ctx
def promote(
    ctx,
    model,
    version,
    from_alias,
    alias,
    requirements,
    no_regression,
    lower_is_better,
    tolerance,
    smoke,
    smoke_timeout,
    on_missing,
    canary,
    dry_run,
    reason,
    output,
    junit,
    **flags,
):
    """Gate a model version, then move the alias (default `champion`) to it.

    Gates: version-ready, pyfunc-flavor, signature, input-example, every
    --require and --no-regression, smoke (with --smoke) and
    artifact-integrity (when the version is already in the store). The alias
    moves only if every gate passed. Exit 0 promoted (or dry run passed),
    1 a gate said no or a concurrent promotion was detected, 2 bad input,
    3 MLflow or S3 failed.

    \b
    Example:
      bridge promote fraud --version 7 --require "accuracy>=0.9" \\
          --no-regression accuracy --tolerance 0.005 --smoke --junit gates.xml
      bridge promote fraud --version 8 --canary 10
      bridge promote fraud --from-alias challenger   # completes the canary
    """
    from bridge import gates as g

    reqs = tuple(g.parse_requirement(r) for r in requirements)
    tol = g.parse_tolerance(tolerance)
    extra = sorted(set(lower_is_better) - set(no_regression))
    if extra:
        raise UsageError(
            f"--lower-is-better {', '.join(extra)} without --no-regression for it",
            hint="add --no-regression METRIC for each --lower-is-better METRIC",
        )
    if bool(version) == bool(from_alias):
        raise UsageError("give exactly one of --version N or --from-alias ALIAS")
    settings = ctx.settings(
        promote_smoke_timeout=smoke_timeout,
        promote_on_missing=on_missing,
        **flags,
    )
    from bridge.promote import PromoteRequest, PromotionResult, promote
    from bridge.registry import PromotionRegistry

    req = PromoteRequest(
        model=model,
        version=version,
        from_alias=from_alias,
        alias=_alias(alias, settings),
        requirements=reqs,
        no_regression=tuple(no_regression),
        lower_is_better=frozenset(lower_is_better),
        tolerance=tol,
        smoke=smoke,
        canary=canary,
        dry_run=dry_run,
        reason=reason,
        on_missing=settings.promote_on_missing,
    )
    suite = f"bridge promote {model}"
    try:
        result = promote(settings, PromotionRegistry(settings), req)
    except BridgeError as exc:
        result = PromotionResult(
            model=model,
            version=version,
            alias=settings.canary_alias if canary is not None else (alias or settings.alias),
            previous_version=None,
            dry_run=dry_run,
            error=exc,
            message=exc.one_line(),
        )
        if output in DATA_FORMATS:
            print_data(result.as_dict(), output)
        if junit:
            _write_junit(junit, [], suite, exc.one_line())
        raise
    error = result.error.one_line() if result.error else None
    if junit:
        _write_junit(junit, result.gates, suite, error)
    if output in DATA_FORMATS:
        print_data(result.as_dict(), output)
    else:
        _print_gates(result)
    if result.error is not None:
        raise result.error  # one line on stderr and its exit code, from bridge.cli.main
    return result.exit_code


def _print_gates(result) -> None:
    for gate in result.gates:
        label, colour = _STYLE.get(gate.status, (gate.status.upper(), None))
        _echo(f"{click.style(label, fg=colour, bold=True)}  {gate.name}: {gate.message}")
    if result.error is None:
        ok = result.exit_code == 0
        _echo(click.style(result.message, fg="green" if ok else "red", bold=True))


@click.command()
@click.argument("model")
@click.option(
    "--alias", metavar="ALIAS", help="Alias to move back [env: BRIDGE_ALIAS, default: champion]."
)
@click.option(
    "--to", "to", metavar="N", help="Version to move to (default: the previous one in the history)."
)
@click.option("--reason", metavar="TEXT", help="Why: kept in the history.")
@output_option("text")
@tracking_option
@pass_ctx
def rollback(ctx, model, alias, to, reason, output, **flags):
    """Move the alias back to the version that held it before (or to --to N).

    The previous version comes from the history bridge keeps in the registry
    (`bridge history MODEL`); versions already rolled away from are skipped, so
    rolling back twice goes two promotions back. Rolling back the canary alias
    (default challenger) ends the canary: the alias and its traffic percent go.
    Recorded in the history too.

    \b
    Example:
      bridge rollback fraud
      bridge rollback fraud --to 5 --reason "v7 doubles latency"
      bridge rollback fraud --alias challenger     # abort the canary
    """
    settings = ctx.settings(**flags)
    from bridge.promote import rollback as do_rollback
    from bridge.registry import PromotionRegistry

    alias = _alias(alias, settings)
    result = do_rollback(settings, PromotionRegistry(settings), model, alias, to, reason)
    if output in DATA_FORMATS:
        print_data(result.as_dict(), output)
    elif result.to_version is None:
        _echo(
            f"canary of {model!r} ended: {result.alias!r} (version {result.from_version}) "
            "and its traffic percent removed"
        )
    else:
        _echo(
            f"rolled back {result.alias!r} of {model!r} from {result.from_version or 'nothing'} "
            f"to version {result.to_version}"
        )
    return 0


@click.command()
@click.argument("model")
@click.option("--alias", metavar="ALIAS", help="Only moves of this alias.")
@output_option("table")
@tracking_option
@pass_ctx
def history(ctx, model, alias, output, **flags):
    """Print the promotions and rollbacks of a model, oldest first.

    Read from the model's `bridge.history` tag, written by `bridge promote`
    and `bridge rollback`.

    \b
    Example:
      bridge history fraud
      bridge history fraud --output json | jq '.[-1]'
    """
    settings = ctx.settings(**flags)
    from bridge.promote import read_history
    from bridge.registry import PromotionRegistry

    entries = read_history(PromotionRegistry(settings), model)
    if alias:
        entries = [e for e in entries if e.get("alias") == alias]
    if output in DATA_FORMATS:
        print_data(entries, output)
        return 0
    if not entries:
        click.echo(f"no promotions of {model!r} recorded yet")
        return 0
    rows = [["WHEN", "ACTION", "ALIAS", "FROM", "TO", "BY", "WHY"]]
    for e in entries:
        why = e.get("reason") or ""
        if e.get("canary_percent") is not None:
            why = f"[{e['canary_percent']}%] {why}".strip()
        rows.append(
            [
                e.get("at", ""),
                e.get("action", ""),
                e.get("alias", ""),
                e.get("from") or "-",
                e.get("to") or "-",
                e.get("actor", ""),
                why,
            ]
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo(
            "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
        )
    return 0
