"""Leader election on a coordination.k8s.io/v1 Lease (the Kubernetes API edge).

With two replicas, exactly one holds the Lease and reconciles. The holder
renews it every ``renew_period`` seconds; a replica that finds the Lease
unrenewed for longer than its ``leaseDurationSeconds`` takes it over. Every
write carries the ``resourceVersion`` it read, so two candidates racing for
the same Lease cannot both win: the API server rejects the loser with 409.

The holder also writes the URL at which it receives webhooks into an
annotation; a replica that is not the leader forwards verified webhook
deliveries there (see :mod:`bridge.daemon`).

Verbs used on ``leases`` (and nothing else): get, create, update.
lightkube is imported lazily: only ``bridge serve`` with leader election on
needs it. The Lease goes over the wire as plain data (a lightkube generic
resource) so that its times are written as the API server parses a MicroTime:
RFC 3339 with exactly six fractional digits (kubernetes/kubernetes
staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/micro_time.go,
``UnmarshalJSON``: ``time.Parse(RFC3339Micro, str)``); a datetime encoder that
drops a zero fraction would see one write in a million refused.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.errors import PermanentError, TemporaryError, UsageError
from bridge.keys import LEADER_URL_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL

log = logging.getLogger(__name__)

# The verbs this module sends to the API server, checked against the Role by the tests.
LEASE_VERBS = frozenset({"get", "create", "update"})


def default_identity() -> str:
    """Pod name (the hostname in Kubernetes) plus a random suffix, unique per process."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _now() -> datetime:
    return datetime.now(UTC)


@functools.cache
def _lease_class():
    """coordination.k8s.io/v1 Lease as a lightkube generic (plain dict) resource."""
    from lightkube.generic_resource import create_namespaced_resource

    return create_namespaced_resource("coordination.k8s.io", "v1", "Lease", "leases")


def micro_time(value: datetime | None) -> str | None:
    """A metav1.MicroTime on the wire: UTC, six fractional digits, ``Z``."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _api_client(kubeconfig: str | None, context: str | None):
    """The Lease API through the same loader as apply and status (bridge.kube), so
    BRIDGE_KUBECONFIG and BRIDGE_KUBE_CONTEXT choose the cluster for both."""
    from bridge.kube import load_api_client

    try:
        return load_api_client(kubeconfig, context, timeout=(5.0, 5.0))
    except UsageError as exc:
        raise PermanentError(
            f"leader election: {exc.message}",
            hint="run in a pod with a ServiceAccount, set BRIDGE_KUBECONFIG / KUBECONFIG and "
            "BRIDGE_KUBE_CONTEXT, or disable leader election with BRIDGE_LEADER_ELECTION=false",
        ) from None


@dataclass
class LeaseRecord:
    holder: str | None
    duration: int
    renew_time: datetime | None
    transitions: int
    leader_url: str | None
    resource_version: str | None


class LeaseLock:
    """Read and write one Lease object. All API errors leave as bridge errors."""

    def __init__(
        self,
        name: str,
        namespace: str,
        api=None,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
    ):
        self.name = name
        self.namespace = namespace
        self._api = api
        self._kubeconfig = kubeconfig
        self._context = context

    @property
    def api(self):
        if self._api is None:
            self._api = _api_client(self._kubeconfig, self._context)
        return self._api

    def _call(self, what: str, request, *, missing_ok: bool = False):
        import httpx2

        from bridge.kube import api_failures

        try:
            return request()
        except api_failures() as exc:
            if not isinstance(exc, httpx2.HTTPStatusError):
                if isinstance(exc, httpx2.HTTPError):
                    raise TemporaryError(
                        f"{what}: cannot reach the API server: {type(exc).__name__}"
                    ) from None
                raise PermanentError(
                    f"{what}: no usable Kubernetes credentials: {type(exc).__name__}",
                    hint="check BRIDGE_KUBECONFIG / BRIDGE_KUBE_CONTEXT or the pod's "
                    "ServiceAccount token",
                ) from None
            status, reason = exc.response.status_code, exc.response.reason_phrase
            if status == 404 and missing_ok:
                return None
            if status == 409:
                raise LeaseConflict(f"{what}: another replica wrote the lease first") from None
            if status in (401, 403):
                raise PermanentError(
                    f"{what}: the API server refused ({status} {reason})",
                    hint="check the Role grants get, create, update on leases",
                ) from None
            raise TemporaryError(f"{what}: API server answered {status} {reason}") from None

    def read(self) -> LeaseRecord | None:
        lease = self._call(
            f"reading lease {self.name}",
            lambda: self.api.get(_lease_class(), self.name, namespace=self.namespace),
            missing_ok=True,
        )
        if lease is None:
            return None
        spec = lease.get("spec") or {}
        meta = lease.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        return LeaseRecord(
            holder=spec.get("holderIdentity") or None,
            duration=int(spec.get("leaseDurationSeconds") or 0),
            renew_time=parse_time(spec.get("renewTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
            leader_url=annotations.get(LEADER_URL_ANNOTATION),
            resource_version=meta.get("resourceVersion"),
        )

    def write(self, record: LeaseRecord, *, create: bool) -> bool:
        """Create or update (compare-and-swap); False when another writer won (409)."""
        metadata = {
            "name": self.name,
            "namespace": self.namespace,
            "annotations": {LEADER_URL_ANNOTATION: record.leader_url or ""},
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        }
        if not create:
            metadata["resourceVersion"] = record.resource_version
        spec = {
            "holderIdentity": record.holder,
            "leaseDurationSeconds": record.duration,
            "acquireTime": micro_time(record.renew_time) if create else None,
            "renewTime": micro_time(record.renew_time),
            "leaseTransitions": record.transitions,
        }
        body = _lease_class()(
            apiVersion="coordination.k8s.io/v1",
            kind="Lease",
            metadata=metadata,
            spec={k: v for k, v in spec.items() if v is not None},
        )
        try:
            if create:
                self._call(f"creating lease {self.name}", lambda: self.api.create(body))
            else:
                self._call(f"updating lease {self.name}", lambda: self.api.replace(body))
        except LeaseConflict:
            return False
        return True


class LostLeadership(Exception):  # noqa: N818 - a signal to stop, like KeyboardInterrupt
    """This replica no longer holds the Lease: the pass under way stops at once.

    Not a BridgeError on purpose: nothing may count it as one model's failure and
    carry on with the next model, the GitOps output or the cluster.
    """


class LeaseConflict(TemporaryError):
    """Another replica updated the Lease between our read and our write."""


class LeaderElector:
    """Acquire, renew and release one Lease in a background thread.

    ``is_leader`` is True only while this process holds a Lease it renewed
    less than ``lease_duration`` ago, so a replica cut off from the API server
    stops reconciling before another one may take over.
    """

    def __init__(
        self,
        lock: LeaseLock,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_period: float = 5.0,
        leader_url: str | None = None,
        on_change: Callable[[bool], None] | None = None,
    ):
        self.lock = lock
        self.identity = identity
        self.lease_duration = max(1, int(round(lease_duration)))
        self.renew_period = renew_period
        self.leader_url = leader_url
        self.on_change = on_change
        self._leader = False
        self._held_until = 0.0
        self._last_record: LeaseRecord | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    # -- state ---------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        import time

        return self._leader and time.monotonic() < self._held_until

    def leader_url_seen(self) -> str | None:
        """The webhook URL of the current leader (from the last Lease read)."""
        rec = self._last_record
        if rec is None or not rec.holder or rec.holder == self.identity:
            return None
        return rec.leader_url or None

    # -- one step ------------------------------------------------------------
    def try_acquire_or_renew(self) -> bool:
        import time

        started = time.monotonic()
        now = _now()
        record = self.lock.read()
        self._last_record = record
        if record is None:
            new = LeaseRecord(self.identity, self.lease_duration, now, 0, self.leader_url, None)
            won = self.lock.write(new, create=True)
        else:
            expired = (
                record.renew_time is None
                or (now - record.renew_time).total_seconds() > (record.duration or 0)
                or not record.holder
            )
            if record.holder != self.identity and not expired:
                self._set_leader(False)
                return False
            transitions = record.transitions + (0 if record.holder == self.identity else 1)
            new = LeaseRecord(
                self.identity,
                self.lease_duration,
                now,
                transitions,
                self.leader_url,
                record.resource_version,
            )
            won = self.lock.write(new, create=False)
        if won:
            self._held_until = started + self.lease_duration
            self._last_record = new
        self._set_leader(won)
        return won

    def release(self) -> None:
        """Give the Lease up at shutdown so the other replica takes over at once."""
        if not self._leader:
            return
        self._set_leader(False)
        try:
            record = self.lock.read()
            if record is None or record.holder != self.identity:
                return
            record.holder = None
            record.leader_url = None
            record.duration = 1
            self.lock.write(record, create=False)
            log.info("released lease %s", self.lock.name)
        except (TemporaryError, PermanentError) as exc:
            log.warning("could not release lease %s: %s", self.lock.name, exc.one_line())

    def _set_leader(self, value: bool) -> None:
        if value != self._leader:
            log.info(
                "%s leadership of lease %s/%s as %s",
                "acquired" if value else "lost",
                self.lock.namespace,
                self.lock.name,
                self.identity,
            )
            self._leader = value
            if self.on_change:
                self.on_change(value)
        self._leader = value

    # -- loop ----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import random

        failures = 0
        while not self._stop.is_set():
            try:
                self.try_acquire_or_renew()
                failures = 0
                self.last_error = None
                delay = self.renew_period * random.uniform(0.8, 1.0)
            except (TemporaryError, PermanentError) as exc:
                failures += 1
                self.last_error = exc.one_line()
                log.warning("leader election: %s", exc.one_line())
                if not self.is_leader:
                    self._set_leader(False)
                delay = min(self.renew_period, 0.5 * 2**failures) * random.uniform(0.5, 1.0)
            self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_period + 5)
        self.release()
