"""Promotion and rollback: gather facts, run the gates, then move the alias safely.

The gate logic is pure (:mod:`bridge.gates`); MLflow is reached only through
:class:`bridge.registry.PromotionRegistry` and the store through
:class:`bridge.publish.Publisher`. Moving an alias is guarded by a lease tag
on the registered model (see :class:`Lease` and docs/promote.md for what it
guarantees and what it cannot).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
import uuid
from dataclasses import dataclass, field

from bridge import gates as g
from bridge import history
from bridge.errors import BridgeError, CheckFailed, PermanentError, UsageError
from bridge.keys import CANARY_TRAFFIC_TAG, LOCK_TAG
from bridge.registry import ModelVersionInfo, NotFound, PromotionRegistry, tag_value_limit
from bridge.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromoteRequest:
    model: str
    version: str | None = None
    from_alias: str | None = None
    alias: str | None = None  # default: settings.alias
    requirements: tuple[g.Requirement, ...] = ()
    no_regression: tuple[str, ...] = ()
    lower_is_better: frozenset[str] = frozenset()
    tolerance: g.Tolerance = g.Tolerance(0.0)
    smoke: bool = False
    canary: int | None = None
    dry_run: bool = False
    reason: str | None = None
    on_missing: str = "fail"


@dataclass
class PromotionResult:
    model: str
    version: str | None
    alias: str
    previous_version: str | None
    dry_run: bool
    gates: list[g.GateResult] = field(default_factory=list)
    promoted: bool = False
    changed: bool = False
    message: str = ""
    canary_percent: int | None = None
    completed_canary: bool = False
    history_entry: dict | None = None
    error: BridgeError | None = None

    @property
    def gates_passed(self) -> bool:
        return all(x.passed for x in self.gates)

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        if self.dry_run:
            return 0 if self.gates_passed else 1
        return 0 if self.promoted else 1

    def as_dict(self) -> dict:
        return {
            "promoted": self.promoted,
            "changed": self.changed,
            "model": self.model,
            "version": self.version,
            "alias": self.alias,
            "previous_version": self.previous_version,
            "dry_run": self.dry_run,
            "would_promote": self.gates_passed and self.error is None,
            "canary_percent": self.canary_percent,
            "completed_canary": self.completed_canary,
            "message": self.message,
            "gates": [x.as_dict() for x in self.gates],
            "history_entry": self.history_entry,
            "error": None
            if self.error is None
            else {"kind": self.error.kind, "message": self.error.one_line()},
            "exit_code": self.exit_code,
        }


# --- the lease: no compare-and-set in MLflow, so a tag with a unique token ---

# Clocks of CI runners differ; a lock written by a peer a little ahead of us is still valid.
LOCK_CLOCK_SKEW = 60.0


def lock_expiry(value, now: float, ttl: float) -> float | None:
    """The expiry of a lock tag as a Unix time, or None when no bridge could have written it.

    Anyone who can set tags on the registered model can write the lock, so its
    expiry is bounded: a non-number, NaN, infinity, or a time further ahead than
    the TTL (plus clock skew) would block promotion forever and is treated as stale.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        expires = float(value)
    except ValueError:
        return None
    if not math.isfinite(expires) or expires > now + ttl + LOCK_CLOCK_SKEW:
        return None
    return expires


def _short(value, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


class Lease:
    """A best-effort lock on one registered model, held in the ``bridge.lock`` tag.

    acquire: read the tag; refuse if another unexpired token holds it; write our
    token; wait ``settle`` seconds (so a competitor that read "free" just before
    our write has time to land its own write); re-read and proceed only if our
    token is still there. MLflow tag writes are last-writer-wins, so two writers
    that both pass the first read are told apart by the re-read -- unless one
    write takes longer than ``settle`` to land (see docs/promote.md).
    """

    def __init__(self, registry: PromotionRegistry, model: str, ttl: float, settle: float):
        self.registry, self.model, self.ttl, self.settle = registry, model, ttl, settle
        self.token = uuid.uuid4().hex
        self.owner = f"{history.actor()}@{platform.node()}:{os.getpid()}"

    @classmethod
    def of(cls, settings: Settings, registry: PromotionRegistry, model: str) -> Lease:
        return cls(registry, model, settings.promote_lock_ttl, settings.promote_lock_settle)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *_exc) -> None:
        self.release()

    def _read(self) -> dict | None:
        raw = self.registry.registered_model(self.model).tags.get(LOCK_TAG)
        if not raw:
            return None
        try:
            held = json.loads(raw)
        except ValueError:
            held = None
        if isinstance(held, dict) and isinstance(held.get("token"), str):
            return held
        log.warning("ignoring a malformed %s tag on %s (not a bridge lock)", LOCK_TAG, self.model)
        return None

    def _busy(self, held: dict) -> CheckFailed:
        return CheckFailed(
            f"model {self.model!r} is being promoted by {_short(held.get('owner', 'someone'))} "
            f"(lock taken at {_short(held.get('at', '?'))}); nothing was changed",
            hint=f"re-run when it finishes; a dead holder's lock expires after {self.ttl:g}s "
            f"(or remove the {LOCK_TAG} tag)",
        )

    def acquire(self) -> None:
        held = self._read()
        if held and held["token"] != self.token and self._live(held):
            raise self._busy(held)
        body = {
            "token": self.token,
            "owner": self.owner,
            "at": history.now(),
            "expires": time.time() + self.ttl,
        }
        try:
            self.registry.set_model_tag(self.model, LOCK_TAG, json.dumps(body, sort_keys=True))
        except BridgeError:
            # Two writers that both found no lock both INSERT the tag row; MLflow's SQL
            # store refuses the second with 400 (unique key). Losing that race is "busy".
            rival = self._read()
            if rival and rival["token"] != self.token and self._live(rival):
                raise self._busy(rival) from None
            raise
        time.sleep(self.settle)
        held = self._read()
        if not held or held["token"] != self.token:
            raise self._busy(held or {"owner": "a concurrent promotion"})

    def _live(self, held: dict) -> bool:
        expires = lock_expiry(held.get("expires"), time.time(), self.ttl)
        if expires is None:
            log.warning(
                "ignoring the %s tag on %s: its expiry %s is not a time within the lock TTL "
                "(%gs); treating the lock as stale",
                LOCK_TAG,
                self.model,
                _short(held.get("expires")),
                self.ttl,
            )
            return False
        return expires > time.time()

    def still_held(self) -> bool:
        held = self._read()
        return bool(held and held.get("token") == self.token)

    def release(self) -> None:
        try:
            if self.still_held():
                self.registry.delete_model_tag(self.model, LOCK_TAG)
        except BridgeError as exc:
            log.warning("could not release the %s tag of %s: %s", LOCK_TAG, self.model, exc)


# --- gates that need the outside world ---


def _version_gate(info: ModelVersionInfo) -> g.GateResult:
    if info.status == "READY":
        return g.passed("version-ready", f"version {info.version} exists and is READY")
    return g.failed(
        "version-ready", f"version {info.version} is {info.status}, not READY; wait and retry"
    )


def _flavor_gates(mlmodel: bytes, on_missing: str) -> list[g.GateResult]:
    import yaml

    try:
        spec = yaml.safe_load(mlmodel) or {}
    except yaml.YAMLError:
        return [g.failed("pyfunc-flavor", "MLmodel is not valid YAML")]
    flavors = spec.get("flavors") if isinstance(spec, dict) else None
    flavors = flavors if isinstance(flavors, dict) else {}
    out = []
    if "python_function" in flavors:
        out.append(
            g.passed(
                "pyfunc-flavor",
                f"python_function flavor present (flavors: {', '.join(sorted(flavors))})",
            )
        )
    else:
        out.append(
            g.failed(
                "pyfunc-flavor",
                f"no python_function flavor (flavors: {', '.join(sorted(flavors)) or 'none'}); "
                "KServe's MLflow runtime cannot serve it",
            )
        )
    sig = spec.get("signature") if isinstance(spec, dict) else None
    if isinstance(sig, dict) and sig.get("inputs"):
        out.append(g.passed("signature", "the model has an input signature"))
    else:
        out.append(
            g.missing(
                "signature",
                "the model has no input signature; log it with signature= or input_example=",
                on_missing,
            )
        )
    return out


def _example_gate(
    registry: PromotionRegistry, info: ModelVersionInfo, mlmodel: bytes, on_missing: str
) -> g.GateResult:
    name = "input-example"
    try:
        return g.passed(name, registry.validate_serving_example(info, mlmodel))
    except UsageError as exc:  # no example or no signature: a policy matter
        return g.missing(name, exc.message, on_missing)
    except CheckFailed as exc:
        return g.failed(name, exc.message)


def _integrity_gate(settings: Settings, info: ModelVersionInfo) -> g.GateResult:
    name = "artifact-integrity"
    if not settings.target_uri:
        return g.skipped(name, "BRIDGE_TARGET_URI is not set; no published copy to check")
    from bridge.keys import MARKER_NAME
    from bridge.names import k8s_name
    from bridge.publish import Publisher
    from bridge.store import Store

    publisher = Publisher(Store(settings))
    key = k8s_name(info.name)
    prefix = publisher.version_prefix(key, info.version)
    published = publisher.published(key, info.version)
    if published is None:
        if publisher.store.get_bytes(prefix + MARKER_NAME) is not None:
            return g.failed(
                name, f"the marker {MARKER_NAME} at {publisher.store.uri(prefix)} is damaged"
            )
        return g.skipped(name, "version not published to the store yet; nothing to compare")
    if published.source_uri != info.download_uri:
        return g.failed(
            name,
            f"{published.storage_uri} was published from {published.source_uri}, "
            f"not from this version's {info.download_uri}",
        )
    from bridge.layout import damaged_files

    present = publisher.store.list_keys(prefix)
    damaged = damaged_files(
        published.files, prefix, present, lambda key, _size: publisher.store.object_digest(key)
    )
    if damaged:
        bad = ", ".join(what for _, what in damaged)
        return g.failed(name, f"{published.storage_uri}: {bad} since it was published")
    return g.passed(
        name,
        f"{len(published.files)} file(s) at {published.storage_uri} re-hashed, match {published.digest}",
    )


# --- promotion ---


def _resolve(registry: PromotionRegistry, req: PromoteRequest):
    if bool(req.version) == bool(req.from_alias):
        raise UsageError("give exactly one of --version N or --from-alias ALIAS")
    rm = registry.registered_model(req.model)
    if req.from_alias:
        version = rm.aliases.get(req.from_alias)
        if version is None:
            known = ", ".join(f"{a}={v}" for a, v in sorted(rm.aliases.items())) or "none"
            raise UsageError(
                f"model {req.model!r} has no alias {req.from_alias!r}", hint=f"aliases: {known}"
            )
    else:
        version = str(req.version)
    try:
        info = registry.model_version(req.model, version)
    except NotFound:
        raise UsageError(
            f"model {req.model!r} has no version {version}",
            hint="check the version number with the MLflow UI or `bridge history`",
        ) from None
    return rm, info


def _metrics(registry: PromotionRegistry, info: ModelVersionInfo, req: PromoteRequest):
    if not (req.requirements or req.no_regression):
        return {}
    if not info.run_id:
        raise UsageError(
            f"model {info.name!r} version {info.version} has no source run, so "
            "--require/--no-regression have no metrics to read"
        )
    metrics = registry.run_metrics(info.run_id)
    for metric in [r.metric for r in req.requirements] + list(req.no_regression):
        if metric not in metrics:
            raise g.unknown_metric(metric, metrics, f"run {info.run_id} of version {info.version}")
    return metrics


def run_gates(
    settings: Settings,
    registry: PromotionRegistry,
    req: PromoteRequest,
    info: ModelVersionInfo,
    baseline_version: str | None,
    baseline_alias: str,
) -> list[g.GateResult]:
    on_missing = g.check_policy(req.on_missing)
    metrics = _metrics(registry, info, req)  # unknown metrics are bad input: fail fast
    results = [_version_gate(info)]
    ready = results[0].passed
    if ready:
        mlmodel = registry.mlmodel(info)
        results += _flavor_gates(mlmodel, on_missing)
        results.append(_example_gate(registry, info, mlmodel, on_missing))
    else:
        for name in ("pyfunc-flavor", "signature", "input-example"):
            results.append(g.skipped(name, "version is not READY"))
    results += [g.require_gate(r, metrics, info.run_id or "") for r in req.requirements]
    if req.no_regression:
        results += _regression_gates(registry, req, info, metrics, baseline_version, baseline_alias)
    if req.smoke:
        from bridge.smoke import smoke_gate

        results.append(
            smoke_gate(settings, info) if ready else g.skipped("smoke", "version is not READY")
        )
    results.append(
        _integrity_gate(settings, info)
        if ready
        else g.skipped("artifact-integrity", "version is not READY")
    )
    return results


def _regression_gates(registry, req, info, metrics, baseline_version, baseline_alias):
    out = []
    label = f"version {baseline_version} ({baseline_alias})"
    if baseline_version is None or baseline_version == info.version:
        why = (
            f"no version holds {baseline_alias!r} yet"
            if baseline_version is None
            else f"version {info.version} already holds {baseline_alias!r}"
        )
        return [
            g.skipped(f"no-regression {m}", f"{why}; nothing to compare") for m in req.no_regression
        ]
    base_info = registry.model_version(req.model, baseline_version)
    base_metrics = registry.run_metrics(base_info.run_id) if base_info.run_id else {}
    for metric in req.no_regression:
        out.append(
            g.regression_gate(
                metric,
                metrics[metric],
                base_metrics.get(metric),
                tolerance=req.tolerance,
                lower_is_better=metric in req.lower_is_better,
                baseline_label=label,
            )
        )
    return out


def promote(
    settings: Settings, registry: PromotionRegistry, req: PromoteRequest
) -> PromotionResult:
    alias = req.alias or settings.alias
    if req.canary is not None and not 0 < req.canary < 100:
        raise UsageError(
            f"--canary {req.canary} is out of range", hint="give a percent from 1 to 99"
        )
    if req.canary is not None and alias == settings.canary_alias:
        raise UsageError(f"--alias {alias!r} is the canary alias; --canary sets it already")
    target = settings.canary_alias if req.canary is not None else alias
    rm, info = _resolve(registry, req)
    previous = rm.aliases.get(target)
    baseline = rm.aliases.get(alias)
    completes_canary = (
        req.canary is None
        and req.from_alias == settings.canary_alias
        and alias != settings.canary_alias
    )
    result = PromotionResult(
        model=req.model,
        version=info.version,
        alias=target,
        previous_version=previous,
        dry_run=req.dry_run,
        canary_percent=req.canary,
        completed_canary=False,
    )
    result.gates = run_gates(settings, registry, req, info, baseline, alias)
    if not result.gates_passed:
        names = ", ".join(x.name for x in result.gates if not x.passed)
        result.message = f"not promoted: gate(s) failed: {names}"
        return result
    old_percent = rm.tags.get(CANARY_TRAFFIC_TAG)
    unchanged = (
        previous == info.version
        and not completes_canary
        and (req.canary is None or old_percent == str(req.canary))
    )
    if req.dry_run:
        result.message = (
            f"dry run: every gate passed; would move {target!r} from "
            f"{previous or 'nothing'} to {info.version}"
            if not unchanged
            else f"dry run: every gate passed; {target!r} already points at {info.version}"
        )
        return result
    if unchanged:
        result.promoted = True
        result.message = f"{target!r} already points at version {info.version}; nothing to change"
        return result
    try:
        _move(settings, registry, req, result, rm, completes_canary, baseline, alias)
    except BridgeError as exc:  # keep the gate report; the caller prints and exits with it
        result.error = exc
        result.message = exc.one_line()
    return result


def _move(settings, registry, req, result, rm, completes_canary, baseline, alias) -> None:
    """Take the lease, check nothing moved since the gates read it, move, record, verify."""
    target, version = result.alias, result.version
    with Lease.of(settings, registry, req.model) as lease:
        now = registry.registered_model(req.model)
        for name, seen in ((target, result.previous_version), (alias, baseline)):
            current = now.aliases.get(name)
            if current != seen:
                raise CheckFailed(
                    f"alias {name!r} of model {req.model!r} moved from version "
                    f"{seen or 'nothing'} to {current or 'nothing'} while the gates ran "
                    "(a concurrent promotion?); nothing was changed",
                    hint="re-run the promotion to gate against the new holder",
                )
        registry.set_alias(req.model, target, version)
        action = history.PROMOTE
        if req.canary is not None:
            registry.set_model_tag(req.model, CANARY_TRAFFIC_TAG, str(req.canary))
            action = history.CANARY
        elif completes_canary:
            registry.delete_alias(req.model, settings.canary_alias)
            registry.delete_model_tag(req.model, CANARY_TRAFFIC_TAG)
            result.completed_canary = True
            action = history.CANARY_COMPLETE
        entry = history.entry(
            action,
            target,
            result.previous_version,
            version,
            reason=req.reason,
            gates=g.summary(result.gates),
            canary_percent=req.canary,
            canary_alias=settings.canary_alias if completes_canary else None,
        )
        record_history(settings, registry, req.model, now.tags.get(history.HISTORY_TAG), entry)
        result.history_entry = entry
        after = registry.registered_model(req.model)
        if after.aliases.get(target) != version or not lease.still_held():
            raise CheckFailed(
                f"alias {target!r} of model {req.model!r} points at version "
                f"{after.aliases.get(target) or 'nothing'} right after this run set it to "
                f"{version}: a concurrent writer overwrote it",
                hint="check `bridge history` and the registry, then re-run",
            )
    result.promoted = result.changed = True
    moved = (
        f"set canary traffic of {target!r} (version {version}) of {req.model!r}"
        if result.previous_version == version
        else f"moved {target!r} of {req.model!r} from {result.previous_version or 'nothing'} to {version}"
    )
    result.message = (
        moved
        + (f" ({req.canary}% canary traffic)" if req.canary is not None else "")
        + (
            f"; canary rollout complete, {settings.canary_alias!r} removed"
            if completes_canary
            else ""
        )
    )


# Tag value limit of MLflow servers before 2.x raised it; used if the server refuses more.
_OLD_SERVER_TAG_LIMIT = 5000


def record_history(settings, registry, model: str, stored: str | None, entry: dict) -> None:
    """Append one move to the model's promotion history tag (MLflow keeps no alias history)."""
    limit = tag_value_limit()
    for max_chars in dict.fromkeys((limit, min(limit, _OLD_SERVER_TAG_LIMIT))):
        value = history.append(
            stored, entry, max_chars=max_chars, max_entries=settings.promote_history_limit
        )
        try:
            registry.set_model_tag(model, history.HISTORY_TAG, value)
            return
        except PermanentError as exc:  # an older server with a smaller limit: trim harder
            if max_chars <= _OLD_SERVER_TAG_LIMIT or len(value) <= _OLD_SERVER_TAG_LIMIT:
                raise
            log.warning("MLflow refused a %d-character history (%s); trimming", len(value), exc)


# --- rollback and history ---


@dataclass
class RollbackResult:
    model: str
    alias: str
    from_version: str | None
    to_version: str | None
    entry: dict

    def as_dict(self) -> dict:
        return {
            "rolled_back": True,
            "canary_aborted": self.to_version is None,
            "model": self.model,
            "alias": self.alias,
            "previous_version": self.from_version,
            "version": self.to_version,
            "history_entry": self.entry,
        }


def rollback(
    settings: Settings,
    registry: PromotionRegistry,
    model: str,
    alias: str | None,
    to: str | None,
    reason: str | None = None,
) -> RollbackResult:
    alias = alias or settings.alias
    rm = registry.registered_model(model)
    current = rm.aliases.get(alias)
    if alias == settings.canary_alias and not to:
        return _abort_canary(settings, registry, model, current, reason)
    entries = history.parse(rm.tags.get(history.HISTORY_TAG))
    target = str(to) if to else history.rollback_target(entries, alias, current)
    if target is None:
        raise UsageError(
            f"the history of model {model!r} has no version of {alias!r} before "
            f"{current or 'the current one'} to roll back to",
            hint="name the version with --to N",
        )
    if target == current:
        raise UsageError(f"alias {alias!r} of model {model!r} already points at version {target}")
    try:
        info = registry.model_version(model, target)
    except NotFound:
        raise UsageError(f"model {model!r} has no version {target}") from None
    if info.status != "READY":
        raise CheckFailed(f"version {target} is {info.status}, not READY; cannot roll back to it")
    with Lease.of(settings, registry, model):
        now = registry.registered_model(model)
        if now.aliases.get(alias) != current:
            raise CheckFailed(
                f"alias {alias!r} of model {model!r} moved from {current or 'nothing'} to "
                f"{now.aliases.get(alias) or 'nothing'} during the rollback; nothing was changed",
                hint="re-run the rollback",
            )
        registry.set_alias(model, alias, target)
        entry = history.entry(history.ROLLBACK, alias, current, target, reason=reason)
        record_history(settings, registry, model, now.tags.get(history.HISTORY_TAG), entry)
    return RollbackResult(model, alias, current, target, entry)


def _abort_canary(settings, registry, model: str, current: str | None, reason: str | None):
    """Rolling back the canary alias ends the canary: alias and traffic tag removed."""
    alias = settings.canary_alias
    if current is None:
        raise UsageError(f"model {model!r} has no canary ({alias!r} is not set)")
    with Lease.of(settings, registry, model):
        now = registry.registered_model(model)
        if now.aliases.get(alias) != current:
            raise CheckFailed(
                f"alias {alias!r} of model {model!r} moved during the rollback; nothing was changed",
                hint="re-run the rollback",
            )
        registry.delete_alias(model, alias)
        registry.delete_model_tag(model, CANARY_TRAFFIC_TAG)
        entry = history.entry(history.CANARY_ABORT, alias, current, None, reason=reason)
        record_history(settings, registry, model, now.tags.get(history.HISTORY_TAG), entry)
    return RollbackResult(model, alias, current, None, entry)


def read_history(registry: PromotionRegistry, model: str) -> list[dict]:
    return history.parse(registry.registered_model(model).tags.get(history.HISTORY_TAG))
