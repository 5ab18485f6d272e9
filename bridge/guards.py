"""Rollout guards: PromQL checks of the canary against thresholds, and the Prometheus client.

A guard is ``QUERY OP THRESHOLD``: the query (a template) must return one number.
The templates know the series Knative's queue-proxy exports for every KServe
predictor revision (knative/docs ``docs/serving/metrics.md``, "Queue proxy"):
``revision_app_request_count`` (counter) and ``revision_app_request_latencies``
(histogram, milliseconds), labelled ``namespace_name``, ``configuration_name``
(KServe's predictor service, ``<isvc>-predictor``), ``revision_name``,
``response_code`` and ``response_code_class``. During a KServe canary the canary
is the predictor's ``latestReadyRevision`` and the champion its
``previousRolledoutRevision`` (``ComponentStatusSpec`` in KServe's
``pkg/apis/serving/v1beta1/inference_service_status.go``).

Placeholders: ``{namespace}``, ``{isvc}``, ``{configuration}``, ``{canary_revision}``,
``{champion_revision}``, ``{canary}`` / ``{champion}`` (the label matchers of the two
revisions) and ``{window}`` (the bake time as a PromQL duration).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import TemporaryError, UsageError

OPS = {
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
}
# A guard whose kind is "data" measures whether there is enough to judge (e.g. a
# minimum request count): failing it counts as missing data, not as a bad canary.
KINDS = ("health", "data")

_SELECT = 'namespace_name="{namespace}",configuration_name="{configuration}",revision_name="{rev}"'

TEMPLATES: dict[str, tuple[str, str]] = {
    # name -> (query, kind); {{ }} are literal braces of PromQL label matchers
    "error-ratio": (
        '(sum(rate(revision_app_request_count{{{canary},response_code_class="5xx"}}[{window}]))'
        " or vector(0)) / sum(rate(revision_app_request_count{{{canary}}}[{window}]))",
        "health",
    ),
    "latency-p95-ratio": (
        "histogram_quantile(0.95, sum by (le) "
        "(rate(revision_app_request_latencies_bucket{{{canary}}}[{window}])))"
        " / histogram_quantile(0.95, sum by (le) "
        "(rate(revision_app_request_latencies_bucket{{{champion}}}[{window}])))",
        "health",
    ),
    "min-requests": ("sum(increase(revision_app_request_count{{{canary}}}[{window}]))", "data"),
}
DEFAULT_GUARDS = "error-ratio<0.01,latency-p95-ratio<=1.2,min-requests>=100"

_SPEC = re.compile(r"^\s*([a-z0-9][-a-z0-9]*)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")
# Metric names in a query: an identifier directly before a label matcher or a range.
_METRIC = re.compile(r"(?<![\w:])([A-Za-z_:][A-Za-z0-9_:]*)\s*[{\[]")
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset"}


@dataclass(frozen=True)
class Guard:
    name: str
    query: str  # a template, see the module docstring
    op: str
    threshold: float
    kind: str = "health"

    def describe(self) -> str:
        return f"{self.name} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Revisions:
    """Where the canary's and the champion's series are: one KServe predictor, two revisions."""

    namespace: str
    isvc: str
    canary: str
    champion: str


@dataclass(frozen=True)
class GuardResult:
    guard: Guard
    query: str  # as sent
    value: float | None  # None: no data

    @property
    def missing(self) -> bool:
        return self.value is None or (self.guard.kind == "data" and not self.passed)

    @property
    def passed(self) -> bool:
        return self.value is not None and OPS[self.guard.op](self.value, self.guard.threshold)

    def as_dict(self) -> dict:
        return {
            "guard": self.guard.name,
            "query": self.query,
            "value": self.value,
            "op": self.guard.op,
            "threshold": self.guard.threshold,
            "passed": self.passed,
        }


def parse_guards(spec: str, custom_file: str | None = None) -> list[Guard]:
    """``"error-ratio<0.01,min-requests>=100"`` plus the guards of a YAML file (custom queries)."""
    guards: list[Guard] = []
    for item in (s for s in spec.split(",") if s.strip()):
        m = _SPEC.match(item)
        if not m:
            raise UsageError(
                f"rollout guard {item.strip()!r} is not NAME OP NUMBER",
                hint=f"e.g. {DEFAULT_GUARDS}",
            )
        name, op, value = m.groups()
        if name not in TEMPLATES:
            raise UsageError(
                f"unknown rollout guard {name!r}",
                hint=f"built-in guards: {', '.join(TEMPLATES)}; add your own in BRIDGE_ROLLOUT_GUARDS_FILE",
            )
        query, kind = TEMPLATES[name]
        guards.append(Guard(name, query, op, _number(value, name), kind))
    if custom_file:
        guards += _load_file(custom_file)
    names = [g.name for g in guards]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"rollout guard(s) named twice: {', '.join(dupes)}")
    return guards


def _number(value, name: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"rollout guard {name!r}: threshold {value!r} is not a number") from None
    if math.isnan(f):
        raise UsageError(f"rollout guard {name!r}: threshold is NaN")
    return f


def _load_file(path: str) -> list[Guard]:
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read BRIDGE_ROLLOUT_GUARDS_FILE {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"BRIDGE_ROLLOUT_GUARDS_FILE {path} is not YAML: {exc}") from None
    items = doc.get("guards") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise UsageError(
            f"BRIDGE_ROLLOUT_GUARDS_FILE {path} has no 'guards:' list",
            hint="see docs/rollout.md#custom-guards",
        )
    out = []
    for i, item in enumerate(items):
        where = f"{path}: guards[{i}]"
        if not isinstance(item, dict) or not {"name", "query", "op", "threshold"} <= set(item):
            raise UsageError(f"{where} needs name, query, op and threshold")
        if item["op"] not in OPS:
            raise UsageError(f"{where}: op {item['op']!r} is not one of {', '.join(OPS)}")
        kind = item.get("kind", "health")
        if kind not in KINDS:
            raise UsageError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        out.append(
            Guard(
                str(item["name"]),
                str(item["query"]),
                item["op"],
                _number(item["threshold"], item["name"]),
                kind,
            )
        )
    return out


def render(guard: Guard, rev: Revisions, window_seconds: float) -> str:
    configuration = f"{rev.isvc}-predictor"
    common = {"namespace": rev.namespace, "configuration": configuration}
    values = {
        **common,
        "isvc": rev.isvc,
        "canary_revision": rev.canary,
        "champion_revision": rev.champion,
        "canary": _SELECT.format(rev=rev.canary, **common),
        "champion": _SELECT.format(rev=rev.champion, **common),
        "window": f"{max(1, int(window_seconds))}s",
    }
    try:
        return guard.query.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(
            f"rollout guard {guard.name!r}: bad placeholder in its query ({exc})",
            hint="known: " + ", ".join("{" + k + "}" for k in values) + "; write {{ }} for braces",
        ) from None


def metric_names(query: str) -> set[str]:
    return {n for n in _METRIC.findall(query) if n not in _PROMQL_WORDS and not n.startswith("__")}


class Prometheus:
    """The HTTP API of a Prometheus server (``/api/v1/query``, ``/api/v1/label/__name__/values``)."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict | None = None) -> dict:
        import requests

        try:
            r = requests.get(self.url + path, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise TemporaryError(
                f"Prometheus at {self.url} is unreachable: {type(exc).__name__}",
                hint="check BRIDGE_PROMETHEUS_URL",
            ) from None
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code == 400 or body.get("errorType") == "bad_data":
            raise UsageError(
                f"Prometheus refused the query: {body.get('error', r.text[:200])}",
                hint="fix the guard's PromQL",
            )
        if r.status_code >= 500 or r.status_code == 429:
            raise TemporaryError(f"Prometheus at {self.url} answered {r.status_code}")
        if r.status_code != 200 or body.get("status") != "success":
            raise UsageError(
                f"Prometheus at {self.url} answered {r.status_code}: {body.get('error', r.text[:200])}",
                hint="check BRIDGE_PROMETHEUS_URL",
            )
        return body["data"]

    def metric_names(self) -> set[str]:
        return set(self._get("/api/v1/label/__name__/values"))

    def scalar(self, query: str) -> float | None:
        """The query's one number; None when it returns nothing (or NaN, e.g. 0/0)."""
        data = self._get("/api/v1/query", {"query": query})
        result = data.get("result")
        if data.get("resultType") == "scalar":
            value = float(result[1])
        elif not result:
            return None
        elif len(result) > 1:
            raise UsageError(
                f"guard query returned {len(result)} series, not one: {query}",
                hint="aggregate it, e.g. with sum(...)",
            )
        else:
            value = float(result[0]["value"][1])
        return None if math.isnan(value) or math.isinf(value) else value


def check_metrics(prom: Prometheus, guards: list[Guard], rev: Revisions, window: float) -> None:
    """Every metric the guards name exists in Prometheus and every query parses: else exit 2."""
    known = prom.metric_names()
    for guard in guards:
        query = render(guard, rev, window)
        unknown = sorted(metric_names(query) - known)
        if unknown:
            raise UsageError(
                f"rollout guard {guard.name!r} uses metric(s) Prometheus does not have: "
                f"{', '.join(unknown)}",
                hint="check the scrape config of the queue-proxy, or fix the guard's query",
            )
        prom.scalar(query)  # a parse error is a UsageError here, before any step


def evaluate(
    prom: Prometheus, guards: list[Guard], rev: Revisions, window: float
) -> list[GuardResult]:
    out = []
    for guard in guards:
        query = render(guard, rev, window)
        out.append(GuardResult(guard, query, prom.scalar(query)))
    return out
