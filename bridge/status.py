"""`bridge status`: one view across the registry, the serving store and what is served.

Two halves, kept apart so the judgement can be tested without servers:

* :func:`classify` is pure. It takes :class:`ModelFacts` (what the registry,
  the store and every served view say about one model) and returns a
  :class:`Verdict`: one of :data:`STATES` with the reasons behind it.
* :func:`collect` gathers those facts, fast on large registries: registered
  models with their aliases come from one paginated search, versions and runs
  are read in batches, and the per-version store reads run in a bounded
  thread pool.

What is served comes from pluggable :class:`ServedSource` objects: the GitOps
output directory (:class:`OutputDirSource`) and, when bridge applies to a
cluster (``BRIDGE_APPLY``), the InferenceServices it owns there
(:class:`ClusterSource`). Each turns resources into :class:`ServedRef` rows with
:func:`served_refs_from_resource`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bridge import keys, layout
from bridge.keys import ANNOTATION_PREFIX, MANAGED_BY, MANAGED_BY_LABEL
from bridge.kserve_status import (
    FAILED_TO_LOAD,
    NOT_READY,
    SERVING,
    LiveStatus,
    read_status,
    serving_state,
)
from bridge.names import k8s_name
from bridge.rollout import view_from_tags
from bridge.settings import Settings

log = logging.getLogger(__name__)

IN_SYNC = "in_sync"
PENDING = "pending"
DRIFTED = "drifted"
BROKEN = "broken"
ORPHANED = "orphaned"
STATES = (IN_SYNC, PENDING, DRIFTED, BROKEN, ORPHANED)
# States that make `bridge status` exit 1 (a CI or cron check fails on them).
FAILING_STATES = frozenset({DRIFTED, BROKEN})
# What a live InferenceService's .status says (the `serving` field, cluster view only);
# the ones that make `bridge status` exit 1 as well.
SERVING_STATES = (SERVING, NOT_READY, FAILED_TO_LOAD)
FAILING_SERVING_STATES = frozenset({NOT_READY, FAILED_TO_LOAD})


DEFAULT_WORKERS = 8


# ---------------------------------------------------------------------------
# Facts (plain data)


@dataclass(frozen=True)
class VersionFacts:
    """What the registry says about the version an alias points to."""

    version: str
    run_id: str | None = None
    status: str = "READY"
    problem: str | None = None  # why sync cannot publish it (unreadable, source refused)


@dataclass(frozen=True)
class StoreFacts:
    """What the serving store holds under ``<target>/<k8s-name>/<version>/``."""

    version: str
    storage_uri: str
    published: bool  # the marker exists
    digest: str | None = None
    model: str | None = None  # registered model named in the marker
    run_id: str | None = None  # run named in the marker
    check: str = "none"  # "none" (not published), "sizes" or "sha256": how it was verified
    problem: str | None = None  # why verification failed; None when it passed

    @property
    def verified(self) -> bool:
        return self.published and self.problem is None


@dataclass(frozen=True)
class ServedRef:
    """One served (or emitted) InferenceService, as read from a served view."""

    source: str  # "output-dir", "cluster", ...
    location: str  # file path, or namespace/name
    k8s_name: str
    registered_model: str | None = None
    alias: str | None = None
    version: str | None = None
    storage_uri: str | None = None
    digest: str | None = None
    run_id: str | None = None
    canary_state: str | None = None  # why a canary is not routed (bridge's annotation)
    live: LiveStatus | None = None  # the object's .status, for live views (the cluster)


@dataclass(frozen=True)
class Lineage:
    run_id: str | None = None
    experiment_id: str | None = None
    run_name: str | None = None
    run_status: str | None = None
    kfp_pipeline_run_id: str | None = None
    kfp_pipeline_name: str | None = None
    kfp_task_name: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ModelFacts:
    name: str
    k8s_name: str
    alias: str
    canary_alias: str
    registered: bool = True
    approved: VersionFacts | None = None  # the version ``alias`` points to
    canary: VersionFacts | None = None  # the version ``canary_alias`` points to
    store: dict[str, StoreFacts] = field(default_factory=dict)  # by version
    served: tuple[ServedRef, ...] = ()
    sources: tuple[str, ...] = ()  # the served views that were consulted
    lineage: Lineage | None = None
    expected_uris: dict[str, str] = field(default_factory=dict)  # version -> storageUri
    rollout: dict | None = None  # bridge.rollout.State.view() of the model's rollout


@dataclass(frozen=True)
class Verdict:
    state: str
    reasons: tuple[str, ...] = ()


# ---------------------------------------------------------------------------
# Classification (pure)


def classify(f: ModelFacts) -> Verdict:
    """The state of one model, from facts alone (no I/O)."""
    broken: list[str] = []
    drifted: list[str] = []
    pending: list[str] = []

    def store_problem(version: str, why: str) -> None:
        s = f.store.get(version)
        if s is not None and s.published and s.problem:
            msg = f"version {version} in the store fails verification: {s.problem}"
            if msg not in broken:
                broken.append(msg)
        elif (s is None or not s.published) and why:
            msg = f"{why} points at version {version}, which is not published in the store"
            if msg not in broken:
                broken.append(msg)

    for ref in f.served:
        if ref.version is not None:
            store_problem(ref.version, f"{ref.source} {ref.location}")

    if f.approved is None:
        if f.served:
            where = ", ".join(sorted({r.source for r in f.served}))
            served = ", ".join(sorted({r.version or "?" for r in f.served}))
            gone = (
                "the model is no longer registered"
                if not f.registered
                else (f"alias {f.alias!r} is not set")
            )
            return Verdict(
                BROKEN if broken else ORPHANED,
                (*broken, f"version {served} is served ({where}) but {gone}"),
            )
        return Verdict(PENDING, (f"alias {f.alias!r} is not set",))

    want = f.approved.version
    for facts in (f.approved, f.canary):
        if facts is not None and facts.problem and facts.problem not in broken:
            broken.append(facts.problem)
    store_problem(want, "")
    s = f.store.get(want)
    if f.approved.status != "READY":
        pending.append(f"version {want} is {f.approved.status}, not READY")
    if s is None or not s.published:
        pending.append(f"version {want} is not published in the store yet")
    else:
        if s.model is not None and s.model != f.name:
            drifted.append(f"{s.storage_uri} holds model {s.model!r}, not {f.name!r}")
        if s.run_id and f.approved.run_id and s.run_id != f.approved.run_id:
            drifted.append(
                f"the store copy of version {want} came from run {s.run_id}, "
                f"the registry says run {f.approved.run_id}"
            )

    for source in f.sources:
        refs = [r for r in f.served if r.source == source]
        if not any(not _is_canary(r, f) for r in refs):
            pending.append(f"version {want} is not in {source} yet")
        for ref in refs:
            ref_alias, ref_want = f.alias, want
            if _is_canary(ref, f):
                if f.canary is None:
                    drifted.append(
                        f"{source} serves canary version {ref.version or '?'}, "
                        f"but alias {f.canary_alias!r} is not set"
                    )
                    continue
                ref_alias, ref_want = f.canary_alias, f.canary.version
            if ref.version != ref_want:
                drifted.append(
                    f"{source} serves version {ref.version or '?'}, "
                    f"alias {ref_alias!r} points to {ref_want}"
                )
                continue
            ref_store = f.store.get(ref_want)
            ref_uri = ref_store.storage_uri if ref_store else f.expected_uris.get(ref_want)
            if ref_uri and ref.storage_uri != ref_uri:
                drifted.append(f"{source} storageUri is {ref.storage_uri}, expected {ref_uri}")
            elif (
                ref_store is not None
                and ref_store.published
                and ref.digest
                and ref_store.digest
                and ref.digest != ref_store.digest
            ):
                drifted.append(
                    f"{source} names digest {ref.digest}, the store has {ref_store.digest}"
                )

    if broken:
        return Verdict(BROKEN, tuple(broken + drifted))
    if drifted:
        return Verdict(DRIFTED, tuple(drifted))
    if pending:
        return Verdict(PENDING, tuple(pending))
    return Verdict(IN_SYNC, ())


def _is_canary(ref: ServedRef, f: ModelFacts) -> bool:
    return ref.alias is not None and ref.alias == f.canary_alias


def serving_verdict(f: ModelFacts) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(serving state, URL, reasons) from the live views' status; (None, None, ()) when
    no live view holds the model (a GitOps directory cannot know whether it serves).

    Kept apart from :func:`classify`: ``state`` says whether what is deployed matches the
    registry, ``serving`` whether the deployed object answers requests."""
    verdicts = []
    for ref in f.served:
        if ref.live is not None and not _is_canary(ref, f):
            state, why = serving_state(ref.live)
            verdicts.append(
                (state, ref.live.url, tuple(f"{ref.source} {ref.location}: {w}" for w in why))
            )
    if not verdicts:
        return None, None, ()
    order = {FAILED_TO_LOAD: 0, NOT_READY: 1, SERVING: 2}
    worst = min(verdicts, key=lambda v: order[v[0]])[0]
    url = next((v[1] for v in verdicts if v[1]), None)
    return worst, url, tuple(r for v in verdicts for r in v[2])


def exit_code(report: Iterable[dict]) -> int:
    """1 when any model is drifted or broken, or a live view says it is not serving; else 0."""
    return (
        1
        if any(
            row["state"] in FAILING_STATES or row.get("serving") in FAILING_SERVING_STATES
            for row in report
        )
        else 0
    )


# ---------------------------------------------------------------------------
# Served views


class ServedSource(Protocol):
    """Where served InferenceServices are read from (the output dir, the cluster)."""

    name: str

    def served(self) -> list[ServedRef]: ...


def served_refs_from_resource(
    resource: dict, source: str, location: str, *, live: bool = False
) -> list[ServedRef]:
    """ServedRefs from one InferenceService dict bridge owns: the approved version and,
    while a canary rolls out, the canary version (its own annotations, since
    ``spec.predictor.model.storageUri`` then names the canary). [] for anything else.
    ``live``: the resource was read from a cluster, so its ``.status`` is KServe's word
    on whether it serves (an object without one has no report from KServe yet)."""
    if not isinstance(resource, dict) or resource.get("kind") != "InferenceService":
        return []
    meta = resource.get("metadata") or {}
    if (meta.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
        return []
    ann = meta.get("annotations") or {}
    model = ((resource.get("spec") or {}).get("predictor") or {}).get("model") or {}

    def a(key: str) -> str | None:
        value = ann.get(ANNOTATION_PREFIX + key)
        return str(value) if value is not None else None

    status = (read_status(resource) or LiveStatus(reported=False)) if live else None

    def ref(prefix: str, storage_uri: str | None) -> ServedRef:
        return ServedRef(
            source=source,
            location=location,
            k8s_name=str(meta.get("name") or ""),
            registered_model=a(keys.REGISTERED_MODEL_SUFFIX),
            alias=a(prefix + keys.ALIAS_SUFFIX),
            version=a(prefix + keys.VERSION_SUFFIX),
            storage_uri=storage_uri,
            digest=a(prefix + keys.CONTENT_DIGEST_SUFFIX),
            run_id=a(prefix + keys.RUN_ID_SUFFIX),
            canary_state=a(keys.CANARY_STATE_SUFFIX) if not prefix else None,
            live=status if not prefix else None,
        )

    canary = keys.CANARY_PREFIX
    refs = [ref("", a(keys.STORAGE_URI_SUFFIX) or model.get("storageUri"))]
    if a(canary + keys.VERSION_SUFFIX) is not None:
        refs.append(ref(canary, a(canary + keys.STORAGE_URI_SUFFIX)))
    return refs


def served_ref_from_resource(resource: dict, source: str, location: str) -> ServedRef | None:
    """The approved version's ServedRef of one InferenceService; None if not bridge's."""
    refs = served_refs_from_resource(resource, source, location)
    return refs[0] if refs else None


class OutputDirSource:
    """The InferenceService YAML files bridge emitted into a GitOps directory."""

    name = "output-dir"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def served(self) -> list[ServedRef]:
        import yaml

        from bridge.gitops import OutputDir

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available
        refs = []
        for file_name, text in OutputDir(self.path).owned_files().items():
            try:
                docs = list(yaml.load_all(text, Loader=loader))  # a safe loader
            except yaml.YAMLError as exc:
                log.warning("status: skipping %s: not valid YAML (%s)", file_name, exc)
                continue
            for doc in docs:
                refs.extend(served_refs_from_resource(doc, self.name, str(self.path / file_name)))
        return refs


class ClusterSource:
    """The InferenceServices bridge owns in the cluster, listed by the managed-by label."""

    name = "cluster"

    def __init__(self, settings: Settings, namespaces: Iterable[str]):
        self.settings = settings
        self.namespaces = sorted(set(namespaces))

    def served(self) -> list[ServedRef]:
        from bridge.cluster import OWNED_SELECTOR
        from bridge.kube import INFERENCE_SERVICE, KubeClient

        kube = KubeClient.from_settings(self.settings)
        refs = []
        for ns in self.namespaces:
            for item in kube.list(INFERENCE_SERVICE, ns, OWNED_SELECTOR):
                location = f"{ns}/{(item.get('metadata') or {}).get('name', '')}"
                refs.extend(served_refs_from_resource(item, self.name, location, live=True))
        return refs


def served_sources(settings: Settings, output_dir: str | None = None) -> list[ServedSource]:
    """The served views to compare with the registry."""
    sources: list[ServedSource] = []
    directory = output_dir or settings.output_dir
    if directory:
        sources.append(OutputDirSource(directory))
    if settings.apply:
        sources.append(ClusterSource(settings, [settings.namespace]))
    return sources


# ---------------------------------------------------------------------------
# Store reads


# From this many versions on, one listing of the whole target beats one listing per version.
BULK_LISTING_FROM = 100


def inspect_versions(
    store,
    wanted: Iterable[tuple[str, str]],
    *,
    verify: bool = False,
    workers: int = DEFAULT_WORKERS,
) -> dict[tuple[str, str], StoreFacts]:
    """StoreFacts for many (k8s-name, version) pairs, read in a bounded thread pool."""
    pairs = sorted(set(wanted))
    listings: dict[tuple[str, str], dict[str, int]] | None = None
    if len(pairs) >= BULK_LISTING_FROM:
        # One paginated listing (1,000 keys a request) instead of one request per version.
        listings = {p: {} for p in pairs}
        for key, size in store.list_keys(store.prefix).items():
            parts = key[len(store.prefix) :].split("/", 2)
            if len(parts) == 3 and (parts[0], parts[1]) in listings:
                listings[(parts[0], parts[1])][key] = size

    def one(pair: tuple[str, str]) -> StoreFacts:
        keys = listings[pair] if listings is not None else None
        return inspect_version(store, pair[0], pair[1], verify=verify, keys=keys)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(zip(pairs, pool.map(one, pairs), strict=True))


def inspect_version(
    store, k8s: str, version: str, *, verify: bool = False, keys: dict[str, int] | None = None
) -> StoreFacts:
    """What the store holds for one version: published or not, and does it check out.

    Without ``verify`` every file the marker lists must exist with its recorded
    size (one listing, or ``keys`` when the caller listed already); with
    ``verify`` every file is read back and re-hashed.
    """
    from bridge.keys import MARKER_NAME
    from bridge.publish import parse_marker

    prefix = layout.version_prefix(store.prefix, k8s, version)
    uri = store.uri(prefix)
    if keys is None:
        keys = store.list_keys(prefix)
    if prefix + MARKER_NAME not in keys:
        return StoreFacts(version, uri, published=False)
    data = store.get_bytes(prefix + MARKER_NAME)
    if data is None:  # deleted between the listing and the read
        return StoreFacts(version, uri, published=False)
    pv = parse_marker(data, uri)
    check = "sha256" if verify else "sizes"
    if pv is None:
        try:
            digest = json.loads(data).get("digest")
        except (ValueError, AttributeError):
            digest = None
        return StoreFacts(
            version, uri, True, digest if isinstance(digest, str) else None,
            check=check, problem=f"{MARKER_NAME} is unreadable or its digest does not match",
        )  # fmt: skip
    digest = (lambda key, _size: store.object_digest(key)) if verify else None
    damaged = layout.damaged_files(pv.files, prefix, keys, digest, first_only=True)
    problem = damaged[0][1] if damaged else None
    return StoreFacts(
        version, uri, True, pv.digest, pv.model, pv.run_id, check=check, problem=problem
    )


# ---------------------------------------------------------------------------
# Collection


def collect(
    settings: Settings,
    registry,
    store,
    sources: list[ServedSource],
    models: list[str] | None = None,
    *,
    verify: bool = False,
    workers: int = DEFAULT_WORKERS,
) -> list[ModelFacts]:
    """Read the registry, the store and every served view; one ModelFacts per managed model.

    A model is managed when its approval alias is set or a served view holds it.
    """
    from bridge.registry import NotFound

    alias, canary_alias = settings.alias, settings.canary_alias
    wanted = set(models or ())
    if models:
        registered = []
        for name in dict.fromkeys(models):
            try:
                registered.extend(registry.registered_models([name]))
            except NotFound:
                pass  # still reported when a served view holds it (orphaned)
    else:
        registered = registry.registered_models()
    from bridge.approval import with_stage_approval

    registered = with_stage_approval(registered, alias, settings.stage)
    by_name = {m.name: m for m in registered}

    served: dict[str, list[ServedRef]] = {}
    by_k8s = {k8s_name(m.name): m.name for m in registered}
    for source in sources:
        for ref in source.served():
            name = ref.registered_model or by_k8s.get(ref.k8s_name) or ref.k8s_name
            if wanted and name not in wanted:
                continue
            served.setdefault(name, []).append(ref)

    managed = sorted({m.name for m in registered if alias in m.aliases} | set(served))

    # Registry: the versions the aliases point to, in batches.
    wanted_versions = set()
    for name in managed:
        m = by_name.get(name)
        for a in (alias, canary_alias):
            if m is not None and a in m.aliases:
                wanted_versions.add((name, m.aliases[a]))
    reads = registry.model_versions(sorted(wanted_versions), workers=workers)
    versions = reads.found
    unreadable = {
        pair: f"version {pair[1]} cannot be read from the registry: {exc.one_line()}"
        for pair, exc in reads.failed.items()
    }
    run_ids = sorted({v.run_id for v in versions.values() if v.run_id})
    runs = registry.runs(run_ids, workers=workers)

    # Store: one inspection per (model, version) that matters, in a bounded pool.
    to_inspect = set()
    for name in managed:
        kname = k8s_name(name)
        for n, v in wanted_versions:
            if n == name:
                to_inspect.add((kname, v))
        for ref in served.get(name, []):
            if ref.version:
                to_inspect.add((kname, ref.version))
    inspected = inspect_versions(store, to_inspect, verify=verify, workers=workers)
    # A model whose bridge.* tags sync refuses is never served: broken, not pending.
    for pair, problem in _tag_problems(settings, [by_name[n] for n in managed if n in by_name]):
        unreadable.setdefault(pair, problem)
    # A version sync would refuse to copy stays unpublished for ever: broken, not pending.
    unpublished = [
        versions[pair]
        for pair in sorted(wanted_versions)
        if pair in versions
        and not inspected.get((k8s_name(pair[0]), pair[1]), StoreFacts("", "", False)).published
    ]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for info, refusal in zip(
            unpublished, pool.map(registry.source_refusal, unpublished), strict=True
        ):
            if refusal is not None:
                unreadable[(info.name, info.version)] = refusal

    source_names = tuple(s.name for s in sources)
    facts = []
    for name in managed:
        m = by_name.get(name)
        kname = k8s_name(name)
        aliases = m.aliases if m is not None else {}
        approved = canary = None
        if alias in aliases:
            key = (name, aliases[alias])
            approved = _version_facts(versions.get(key), key[1], unreadable.get(key))
        if canary_alias in aliases:
            key = (name, aliases[canary_alias])
            canary = _version_facts(versions.get(key), key[1], unreadable.get(key))
        store_facts = {v: sf for (k, v), sf in inspected.items() if k == kname}
        expected = {
            v: store.uri(layout.version_prefix(store.prefix, kname, v)) for v in store_facts
        }
        lineage = None
        if approved is not None:
            lineage = _lineage(approved.run_id, runs)
        elif served.get(name):
            lineage = _lineage(next((r.run_id for r in served[name] if r.run_id), None), runs)
        facts.append(
            ModelFacts(
                name=name,
                k8s_name=kname,
                alias=alias,
                canary_alias=canary_alias,
                registered=m is not None,
                approved=approved,
                canary=canary,
                store=store_facts,
                served=tuple(served.get(name, ())),
                sources=source_names,
                lineage=lineage,
                expected_uris=expected,
                rollout=view_from_tags(settings, m.tags, time.time()) if m is not None else None,
            )
        )
    return facts


def _tag_problems(settings: Settings, models: list) -> list[tuple[tuple[str, str], str]]:
    """((model, approved version), why) for each model whose serving tags are refused."""
    from bridge.errors import BridgeError
    from bridge.overrides import parse_runtimes, resolve
    from bridge.sync import serving_defaults

    defaults, runtimes = serving_defaults(settings), parse_runtimes(settings.runtimes)
    found = []
    for m in models:
        if settings.alias not in m.aliases:
            continue
        try:
            resolve(m.name, m.tags, defaults, runtimes)
        except BridgeError as exc:
            found.append(((m.name, m.aliases[settings.alias]), exc.one_line()))
    return found


def _version_facts(info, version: str, problem: str | None = None) -> VersionFacts:
    if problem is not None:
        run_id, status = (info.run_id, info.status) if info is not None else (None, "UNREADABLE")
        return VersionFacts(version, run_id, status, problem)
    if info is None:  # deleted between the model search and the version read
        return VersionFacts(version, None, "MISSING")
    return VersionFacts(info.version, info.run_id, info.status)


def _lineage(run_id: str | None, runs: dict) -> Lineage | None:
    if not run_id:
        return None
    run = runs.get(run_id)
    if run is None:
        return Lineage(run_id=run_id)
    return Lineage(
        run_id=run_id,
        experiment_id=run.experiment_id,
        run_name=run.run_name,
        run_status=run.status,
        # the run tags the KFP components write (bridge.kfp_run.KfpLineage.tags)
        kfp_pipeline_run_id=run.tags.get(keys.KFP_RUN_ID_TAG),
        kfp_pipeline_name=run.tags.get(keys.KFP_PIPELINE_NAME_TAG),
        kfp_task_name=run.tags.get(keys.KFP_TASK_NAME_TAG),
    )


# ---------------------------------------------------------------------------
# The report (stable JSON)


def _store_dict(s: StoreFacts | None) -> dict | None:
    if s is None:
        return None
    return {
        "version": s.version,
        "storage_uri": s.storage_uri,
        "published": s.published,
        "digest": s.digest,
        "verified": s.verified,
        "check": s.check,
        "problem": s.problem,
    }


def model_row(f: ModelFacts) -> dict:
    """One model's entry in the report: what `--output json` and `/status` return."""
    verdict = classify(f)
    approved_version = f.approved.version if f.approved else None
    canary_version = f.canary.version if f.canary else None
    store_version = approved_version
    if store_version is None and f.served:
        store_version = f.served[0].version
    lineage = f.lineage or Lineage()
    serving, url, serving_reasons = serving_verdict(f)
    live = next((r.live for r in f.served if r.live is not None and not _is_canary(r, f)), None)
    return {
        "name": f.name,
        "state": verdict.state,
        "reasons": list(verdict.reasons),
        "serving": serving,
        "serving_reasons": list(serving_reasons),
        "url": url,
        "live": live.as_dict() if live is not None and live.reported else None,
        "canary_state": next((r.canary_state for r in f.served if r.canary_state), None),
        "k8s_name": f.k8s_name,
        "registered": f.registered,
        "alias": f.alias,
        "version": approved_version,
        "version_status": f.approved.status if f.approved else None,
        "canary_alias": f.canary_alias,
        "canary_version": canary_version,
        "store": _store_dict(f.store.get(store_version)) if store_version else None,
        "canary_store": _store_dict(f.store.get(canary_version)) if canary_version else None,
        "served": [
            {
                "source": r.source,
                "location": r.location,
                "version": r.version,
                "alias": r.alias,
                "storage_uri": r.storage_uri,
                "digest": r.digest,
            }
            for r in f.served
        ],
        "sources": list(f.sources),
        "run_id": lineage.run_id,
        "lineage": lineage.as_dict(),
        "rollout": f.rollout,
    }


def build_report(facts: Iterable[ModelFacts]) -> list[dict]:
    return [model_row(f) for f in sorted(facts, key=lambda f: f.name)]


def note_held_removals(rows: list[dict], policy) -> list[dict]:
    """Say, on each row `bridge sync` would remove, when its mass-removal guard
    (:class:`bridge.prune_guard.RemovalPolicy`) refuses that removal: each served view
    is judged as sync judges it, by the share of its served models that would go."""
    sources = sorted({ref["source"] for row in rows for ref in row["served"]})
    for source in sources:
        served = [r for r in rows if any(ref["source"] == source for ref in r["served"])]
        going = [r for r in served if r["version"] is None]
        why = policy.why_refused(len(served), len(going))
        for row in going if why else ():
            row["reasons"].append(
                f"bridge sync holds back its removal from {source}: {why} "
                "(run `bridge sync --once --allow-mass-removal` if that is intended)"
            )
    return rows


def status_report(
    settings: Settings,
    models: list[str] | None = None,
    *,
    output_dir: str | None = None,
    verify: bool = False,
    sources: list[ServedSource] | None = None,
    workers: int = DEFAULT_WORKERS,
) -> list[dict]:
    """The whole status view as a list of dicts (for the CLI, `/status` and the HTML page)."""
    from bridge.registry import Registry, lean_mlflow_imports
    from bridge.store import Store

    settings.require("tracking_uri", "target_uri")
    lean_mlflow_imports(settings)
    registry = Registry(settings)
    store = Store(settings)
    if sources is None:
        sources = served_sources(settings, output_dir)
    facts = collect(settings, registry, store, sources, models, verify=verify, workers=workers)
    from bridge.prune_guard import RemovalPolicy

    rows = build_report(facts)
    # The guard judges the whole of what is served; a --model view sees only part of it.
    return rows if models else note_held_removals(rows, RemovalPolicy.from_settings(settings))
