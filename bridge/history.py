"""Alias history, kept in the registry itself (pure).

MLflow keeps no history of aliases, so "what was live before?" has no answer at
rollback time. Bridge records every promotion and rollback as a JSON document in
one registered-model tag, ``bridge.history``::

    {"format": 1, "entries": [{"action": "promote", "alias": "champion",
      "from": "3", "to": "4", "actor": "alice", "at": "2026-11-23T10:30:00Z",
      "reason": "weekly retrain", "gates": {"passed": 6, ...},
      "ci_url": "https://github.com/org/repo/actions/runs/1"}, ...]}

The document is bounded: at most ``max_entries`` entries, and never longer than
MLflow's tag value limit; the oldest entries are dropped first.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime

from bridge.keys import HISTORY_TAG as HISTORY_TAG  # re-exported: history.HISTORY_TAG

FORMAT = 1
MAX_REASON = 500

PROMOTE, ROLLBACK = "promote", "rollback"
CANARY, CANARY_COMPLETE, CANARY_ABORT = "canary", "canary-complete", "canary-abort"
ROLLOUT_COMPLETE, ROLLOUT_ABORT = "rollout-complete", "rollout-abort"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def actor(env: Mapping[str, str] | None = None) -> str:
    """Who is promoting: the CI user when running in CI, else the OS user."""
    env = os.environ if env is None else env
    for var in (
        "BRIDGE_ACTOR",
        "GITHUB_ACTOR",
        "GITLAB_USER_LOGIN",
        "BUILDKITE_BUILD_CREATOR_EMAIL",
        "BUILD_USER_ID",  # Jenkins (build-user-vars plugin)
        "BUILD_REQUESTEDFOR",  # Azure Pipelines
        "CIRCLE_USERNAME",
    ):
        if env.get(var):
            return env[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers with arbitrary uids)
        return "unknown"


def ci_run_url(env: Mapping[str, str] | None = None) -> str | None:
    """A link to the CI run doing the promotion, when there is one."""
    env = os.environ if env is None else env
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    for var in (
        "CI_JOB_URL",
        "CI_PIPELINE_URL",
        "BUILDKITE_BUILD_URL",
        "BUILD_URL",
        "CIRCLE_BUILD_URL",
    ):
        if env.get(var):
            return env[var]
    return None


def entry(
    action: str,
    alias: str,
    from_version: str | None,
    to_version: str | None,
    *,
    reason: str | None = None,
    gates: dict | None = None,
    env: Mapping[str, str] | None = None,
    **extra,
) -> dict:
    e = {
        "action": action,
        "alias": alias,
        "from": from_version,
        "to": to_version,
        "actor": actor(env),
        "at": now(),
    }
    if reason:
        e["reason"] = reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."
    if gates is not None:
        e["gates"] = gates
    url = ci_run_url(env)
    if url:
        e["ci_url"] = url
    e.update({k: v for k, v in extra.items() if v is not None})
    return e


def parse(value: str | None) -> list[dict]:
    """Entries of a stored history, oldest first; a damaged tag reads as empty."""
    if not value:
        return []
    try:
        doc = json.loads(value)
    except ValueError:
        return []
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and "action" in e and "alias" in e]


def serialize(entries: list[dict], *, max_chars: int, max_entries: int) -> str:
    """Compact JSON of the newest entries that fit both bounds."""
    kept = entries[-max_entries:] if max_entries > 0 else []
    while True:
        text = json.dumps(
            {"format": FORMAT, "entries": kept}, separators=(",", ":"), sort_keys=True
        )
        if len(text) <= max_chars or not kept:
            return text
        # Drop enough of the oldest entries at once rather than one per pass.
        over = len(text) - max_chars
        drop, size = 0, 0
        while drop < len(kept) and size < over:
            size += len(json.dumps(kept[drop], separators=(",", ":"))) + 1
            drop += 1
        kept = kept[drop:]


def append(value: str | None, new: dict, *, max_chars: int, max_entries: int) -> str:
    return serialize(parse(value) + [new], max_chars=max_chars, max_entries=max_entries)


def for_alias(entries: list[dict], alias: str) -> list[dict]:
    return [e for e in entries if e.get("alias") == alias]


def holders(entries: list[dict], alias: str) -> list[str]:
    """The chain of versions that held ``alias``, oldest first, with rolled-back ones removed.

    A promotion pushes its target; a rollback pops back to its target. So after
    promoting 1, 2, 3 and rolling back once the chain is [1, 2]: a second
    rollback goes to 1, never back to the version that was just rolled away from.
    """
    chain: list[str] = []
    for e in for_alias(entries, alias):
        to, frm = e.get("to"), e.get("from")
        if e["action"] == ROLLBACK:
            while chain and chain[-1] != to:
                chain.pop()
            if not chain and to:
                chain.append(to)
            continue
        if not chain and frm:
            chain.append(frm)
        if to and (not chain or chain[-1] != to):
            chain.append(to)
        if not to:  # the alias was removed (e.g. a canary that completed)
            chain.clear()
    return chain


def rollback_target(entries: list[dict], alias: str, current: str | None) -> str | None:
    """The version a rollback of ``alias`` should move to, from the history alone.

    If the alias still points where bridge last moved it, that is the version
    before it; if it was moved by hand since, it is the last version bridge put there.
    """
    chain = holders(entries, alias)
    if not chain:
        return None
    if chain[-1] != current:
        return chain[-1]
    return chain[-2] if len(chain) >= 2 else None
