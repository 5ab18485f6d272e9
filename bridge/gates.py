"""Promotion gates as pure logic: parse requirements, compare metrics, report as data.

Nothing here talks to MLflow; :mod:`bridge.promote` fetches the facts and
calls these functions. Every gate ends as a :class:`GateResult` (name, status,
message) so the command line, ``--output json`` and ``--junit`` all print the
same thing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from bridge.errors import UsageError

PASSED, FAILED, WARNED, SKIPPED = "passed", "failed", "warned", "skipped"

_REQUIRE_RE = re.compile(
    r"^\s*(?P<metric>[^<>=!]*?)\s*(?P<op>>=|<=|==|>|<)\s*(?P<value>[^<>=]+?)\s*$"
)


@dataclass(frozen=True)
class GateResult:
    name: str
    status: str  # passed | failed | warned | skipped
    message: str

    @property
    def passed(self) -> bool:
        """Warned and skipped gates do not block a promotion."""
        return self.status != FAILED

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "passed": self.passed,
            "status": self.status,
            "message": self.message,
        }


def passed(name: str, message: str) -> GateResult:
    return GateResult(name, PASSED, message)


def failed(name: str, message: str) -> GateResult:
    return GateResult(name, FAILED, message)


def warned(name: str, message: str) -> GateResult:
    return GateResult(name, WARNED, message)


def skipped(name: str, message: str) -> GateResult:
    return GateResult(name, SKIPPED, message)


def missing(name: str, message: str, policy: str) -> GateResult:
    """A missing signature or input example: a warning or a failure, as configured."""
    check_policy(policy)
    return warned(name, message) if policy == "warn" else failed(name, message)


def check_policy(policy: str) -> str:
    if policy not in ("warn", "fail"):
        raise UsageError(
            f"unknown policy {policy!r} for a missing signature or input example",
            hint="use warn or fail (--on-missing, BRIDGE_PROMOTE_ON_MISSING)",
        )
    return policy


# --require "METRIC>=VALUE"


@dataclass(frozen=True)
class Requirement:
    metric: str
    op: str
    value: float

    @property
    def text(self) -> str:
        return f"{self.metric}{self.op}{_fmt(self.value)}"

    def holds(self, actual: float) -> bool:
        if math.isnan(actual):
            return False
        if self.op == ">=":
            return actual >= self.value or _close(actual, self.value)
        if self.op == "<=":
            return actual <= self.value or _close(actual, self.value)
        if self.op == "==":
            return _close(actual, self.value)
        if self.op == ">":
            return actual > self.value and not _close(actual, self.value)
        return actual < self.value and not _close(actual, self.value)


def _close(a: float, b: float) -> bool:
    # Metrics travel through float64 and JSON; 0.1 + 0.2 must equal 0.3 here.
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _fmt(value: float) -> str:
    return f"{value:g}" if value == value else "nan"


def parse_requirement(text: str) -> Requirement:
    """``"accuracy>=0.9"`` -> Requirement; malformed text is a usage error (exit 2)."""
    m = _REQUIRE_RE.match(text or "")
    hint = 'write it as METRIC OP VALUE with OP one of >=, >, <=, <, ==, e.g. --require "accuracy>=0.9"'
    if not m or not m.group("metric"):
        raise UsageError(f"malformed --require {text!r}", hint=hint)
    raw = m.group("value")
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(
            f"malformed --require {text!r}: {raw!r} is not a number", hint=hint
        ) from None
    if not math.isfinite(value):
        raise UsageError(
            f"malformed --require {text!r}: the value must be a finite number", hint=hint
        )
    return Requirement(m.group("metric"), m.group("op"), value)


def require_gate(req: Requirement, metrics: Mapping[str, float], run_id: str) -> GateResult:
    name = f"require {req.text}"
    if req.metric not in metrics:
        raise unknown_metric(req.metric, metrics, f"run {run_id}")
    actual = float(metrics[req.metric])
    verdict = "holds" if req.holds(actual) else "does not hold"
    msg = f"{req.metric} = {_fmt(actual)} on run {run_id}; {req.text} {verdict}"
    return passed(name, msg) if req.holds(actual) else failed(name, msg)


def unknown_metric(metric: str, metrics: Mapping[str, float], where: str) -> UsageError:
    known = ", ".join(sorted(metrics)) or "none"
    return UsageError(
        f"metric {metric!r} is not logged on {where}", hint=f"metrics logged there: {known}"
    )


# --no-regression METRIC [--tolerance X] [--lower-is-better METRIC]


@dataclass(frozen=True)
class Tolerance:
    amount: float
    relative: bool = False  # "2%" is relative to the baseline, "0.01" is absolute

    def allowed(self, baseline: float) -> float:
        return abs(baseline) * self.amount / 100 if self.relative else self.amount

    @property
    def text(self) -> str:
        return f"{_fmt(self.amount)}%" if self.relative else _fmt(self.amount)


def parse_tolerance(text: str | None) -> Tolerance:
    """``None`` -> 0; ``"0.01"`` absolute; ``"2%"`` relative to the baseline value."""
    if text is None or text == "":
        return Tolerance(0.0)
    raw = text.strip()
    relative = raw.endswith("%")
    try:
        amount = float(raw.rstrip("%").strip())
    except ValueError:
        amount = float("nan")
    if not math.isfinite(amount) or amount < 0:
        raise UsageError(
            f"invalid --tolerance {text!r}",
            hint="use a number of 0 or more (absolute, e.g. 0.01) or a percentage (e.g. 2%)",
        )
    return Tolerance(amount, relative)


def regression_gate(
    metric: str,
    candidate: float,
    baseline: float | None,
    *,
    tolerance: Tolerance,
    lower_is_better: bool,
    baseline_label: str,
) -> GateResult:
    """Candidate must be no worse than the baseline, give or take the tolerance."""
    name = f"no-regression {metric}"
    if baseline is None:
        return failed(
            name,
            f"{baseline_label} has no metric {metric!r} to compare with; "
            "drop --no-regression for this promotion or log the metric",
        )
    if math.isnan(candidate) or math.isnan(baseline):
        return failed(name, f"{metric} is NaN (candidate {candidate}, {baseline_label} {baseline})")
    allowed = tolerance.allowed(baseline)
    if lower_is_better:
        ok = candidate <= baseline + allowed or _close(candidate, baseline + allowed)
        direction = "lower is better"
    else:
        ok = candidate >= baseline - allowed or _close(candidate, baseline - allowed)
        direction = "higher is better"
    delta = candidate - baseline
    msg = (
        f"{metric} = {_fmt(candidate)} vs {_fmt(baseline)} on {baseline_label} "
        f"(delta {delta:+g}, tolerance {tolerance.text}, {direction})"
    )
    return passed(name, msg) if ok else failed(name, msg + ": regression")


# Reports


def summary(gates: list[GateResult]) -> dict:
    """What the history keeps of a gate run: counts and the names that did not plainly pass."""
    out: dict = {
        s: sum(1 for g in gates if g.status == s) for s in (PASSED, FAILED, WARNED, SKIPPED)
    }
    for status in (FAILED, WARNED):
        names = [g.name for g in gates if g.status == status]
        if names:
            out[f"{status}_gates"] = names
    return out


def junit_xml(gates: list[GateResult], suite: str, error: str | None = None) -> bytes:
    """JUnit XML: one testcase per gate; failures carry the gate's message."""
    failures = sum(1 for g in gates if g.status == FAILED)
    skips = sum(1 for g in gates if g.status == SKIPPED)
    root = ET.Element("testsuites")
    ts = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(gates) + (1 if error else 0)),
        failures=str(failures),
        errors="1" if error else "0",
        skipped=str(skips),
    )
    for g in gates:
        case = ET.SubElement(ts, "testcase", classname=suite, name=g.name)
        if g.status == FAILED:
            ET.SubElement(case, "failure", message=g.message, type="GateFailed").text = g.message
        elif g.status == SKIPPED:
            ET.SubElement(case, "skipped", message=g.message)
        else:
            ET.SubElement(case, "system-out").text = f"{g.status}: {g.message}"
    if error:
        case = ET.SubElement(ts, "testcase", classname=suite, name="promotion")
        ET.SubElement(case, "error", message=error, type="Error").text = error
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
