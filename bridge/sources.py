"""Where a model version's artifacts may be copied from (pure).

A version's source is whatever its registrant typed: ``s3://any-bucket/...``
would be read with bridge's own credentials and copied into the serving store.
Bridge therefore copies a version only when the location it would read lies
under a root it trusts: the tracking server's own artifact store
(``mlflow-artifacts:`` served by that server), the artifact location of the
experiment the version comes from, MLflow's ``--artifacts-destination``
(BRIDGE_SOURCE_ARTIFACTS_URI) or an entry of BRIDGE_ALLOWED_SOURCE_PREFIXES.

"Under" compares whole path segments of normalised URIs (scheme and host
lower-cased, default ports dropped), so ``s3://bucket-evil`` is not under
``s3://bucket`` and ``s3://b/models-x`` is not under ``s3://b/models``.
Locations that could mean something else to the reader than to this check
are refused outright: ``.``/``..`` segments, percent-escapes, backslashes,
control characters and user-info in the authority.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

_DEFAULT_PORTS = {"http": 80, "https": 443}
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class Location:
    """A normalised artifact location: scheme, authority and path segments."""

    scheme: str
    authority: str
    segments: tuple[str, ...]

    def under(self, root: Location) -> bool:
        return (
            self.scheme == root.scheme
            and self.authority == root.authority
            and self.segments[: len(root.segments)] == root.segments
        )


class UnsafeLocation(ValueError):
    """A URI this module will not reason about (it says why)."""


def parse_location(uri: str) -> Location:
    """``uri`` as a Location; UnsafeLocation when it could be read differently."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in uri) or "\\" in uri:
        raise UnsafeLocation("it contains control characters or a backslash")
    if _ESCAPE.search(uri):
        raise UnsafeLocation("it contains percent-escapes, which could hide another path")
    if not _SCHEME.match(uri):
        raise UnsafeLocation("it has no URI scheme")
    parsed = urllib.parse.urlsplit(uri)
    if parsed.query or parsed.fragment:
        raise UnsafeLocation("it has a query or fragment")
    scheme = parsed.scheme.lower()
    if "@" in parsed.netloc:
        raise UnsafeLocation("it names a user in its host part")
    authority = parsed.netloc.lower()
    if scheme in _DEFAULT_PORTS and parsed.hostname:
        try:
            port = parsed.port
        except ValueError:
            raise UnsafeLocation("its port is not a number") from None
        authority = parsed.hostname.lower()
        if port is not None and port != _DEFAULT_PORTS[scheme]:
            authority += f":{port}"
    segments = tuple(s for s in parsed.path.split("/") if s)
    if any(s in (".", "..") for s in segments):
        raise UnsafeLocation("it contains '.' or '..' path segments")
    return Location(scheme, authority, segments)


def first_root_over(uri: str, roots: list[str]) -> str | None:
    """The first of ``roots`` that ``uri`` lies under, or None.

    Raises UnsafeLocation when ``uri`` itself is unsafe; unparseable roots never match.
    """
    where = parse_location(uri)
    for root in roots:
        try:
            if where.under(parse_location(root)):
                return root
        except UnsafeLocation:
            continue
    return None


def tracking_server_authority(tracking_uri: str | None) -> str | None:
    """host[:port] of an http(s) tracking URI, as mlflow-artifacts://host:port spells it."""
    if not tracking_uri:
        return None
    try:
        loc = parse_location(tracking_uri)
    except UnsafeLocation:
        return None
    return loc.authority if loc.scheme in _DEFAULT_PORTS else None


def served_by_tracking_server(uri: str, tracking_uri: str | None) -> bool:
    """``mlflow-artifacts:/path`` (or ``//host:port/path`` naming this very server): the
    server reads it from its own artifact root and refuses paths that leave it."""
    loc = parse_location(uri)
    if loc.scheme != "mlflow-artifacts":
        return False
    if not loc.authority:
        return True
    # MLflow resolves mlflow-artifacts://host:port against the tracking URI's scheme
    # (mlflow/store/artifact/mlflow_artifacts_repo.py): only this server's own address.
    return loc.authority == tracking_server_authority(tracking_uri)


def parse_prefixes(value: str | None) -> tuple[str, ...]:
    """BRIDGE_ALLOWED_SOURCE_PREFIXES: comma-separated URIs, each checked here."""
    prefixes = tuple(p.strip() for p in (value or "").split(",") if p.strip())
    for prefix in prefixes:
        try:
            loc = parse_location(prefix)
        except UnsafeLocation as exc:
            raise ValueError(f"{prefix!r} is not usable: {exc}") from None
        if not loc.authority and loc.scheme not in ("file", "mlflow-artifacts"):
            raise ValueError(f"{prefix!r} names no bucket or host")
    return prefixes
