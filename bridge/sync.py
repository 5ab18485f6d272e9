"""The reconciler: registry aliases -> published versions -> emitted manifests.

One pass lists registered models, publishes the version each approval alias
points to, and makes the output directory match. A model that fails keeps
whatever it had before (a live endpoint is never removed because MLflow or S3
hiccuped); only a model whose alias is gone loses its manifest, and a pass that
would remove too much of what is served at once removes nothing
(:mod:`bridge.prune_guard`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from bridge.approval import approved_by, stage_hint, with_stage_approval
from bridge.errors import BridgeError, CheckFailed, UsageError, worst_exit_code
from bridge.gitops import OutputChange, OutputDir
from bridge.keys import CANARY_STATE_ANNOTATION
from bridge.names import k8s_name
from bridge.overrides import ServingLimits, ServingSpec, deployment_mode, parse_runtimes, resolve
from bridge.prune_guard import RemovalPolicy
from bridge.publish import PublishedVersion, Publisher, check_same_version
from bridge.registry import (
    ModelVersionInfo,
    RegisteredModelInfo,
    Registry,
    VersionReads,
    listed_versions,
)
from bridge.runtime_fit import (
    DEFAULT_RUNTIME_PACKAGES,
    empty_file_problems,
    empty_files,
    model_format_version,
    parse_provided,
)
from bridge.serving import (
    DesiredService,
    ServedVersion,
    ServingOptions,
    champion_served,
    file_name,
    inference_service,
    service_account,
    to_yaml,
)
from bridge.settings import Settings
from bridge.store import Store

if TYPE_CHECKING:
    from bridge.cluster import ClusterChange

log = logging.getLogger(__name__)


@dataclass
class ModelResult:
    name: str
    k8s_name: str
    # "synced" | "unchanged" | "repaired" | "removed" | "held" (stale, removal refused) | "failed"
    state: str
    version: str | None = None
    storage_uri: str | None = None
    digest: str | None = None
    bytes_copied: int = 0
    error: BridgeError | None = None
    canary_version: str | None = None
    canary_state: str | None = None  # "routed", or why the canary is not routed yet
    approved_by: str | None = None  # "stage Production" when BRIDGE_STAGE chose the version
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "error"}
        d["error"] = self.error.one_line() if self.error else None
        return d


@dataclass
class SyncReport:
    results: list[ModelResult] = field(default_factory=list)
    output: OutputChange | None = None
    cluster: ClusterChange | None = None
    refused: list[BridgeError] = field(default_factory=list)  # removals the guard refused

    @property
    def errors(self) -> list[BridgeError]:
        return [r.error for r in self.results if r.error is not None] + self.refused

    @property
    def exit_code(self) -> int:
        return worst_exit_code(self.errors)

    @property
    def bytes_copied(self) -> int:
        return sum(r.bytes_copied for r in self.results)


def manifest_file_name(name: str) -> str:
    return f"{name}.yaml"


def assign_names(
    models: list[RegisteredModelInfo],
) -> tuple[dict[str, str], dict[str, CheckFailed]]:
    """MLflow name -> Kubernetes name; models whose names collide get an error instead."""
    by_k8s: dict[str, list[str]] = defaultdict(list)
    for m in models:
        by_k8s[k8s_name(m.name)].append(m.name)
    names, clashes = {}, {}
    for kname, originals in by_k8s.items():
        if len(originals) == 1:
            names[originals[0]] = kname
            continue
        for original in originals:
            others = ", ".join(repr(o) for o in originals if o != original)
            clashes[original] = CheckFailed(
                f"model {original!r} maps to Kubernetes name {kname!r}, as does {others}",
                hint="rename one of the registered models",
            )
    return names, clashes


def serving_options(settings: Settings) -> ServingOptions:
    return ServingOptions(
        namespace=settings.namespace,
        service_account=settings.service_account,
        s3_secret_name=settings.s3_secret_name,
        s3_endpoint_url=settings.serving_s3_endpoint_url or settings.target_endpoint_url,
        s3_region=settings.target_region,
        s3_verify_ssl=settings.s3_verify_ssl,
        irsa_role_arn=settings.serving_irsa_role_arn,
        access_key_id_name=settings.kserve_s3_access_key_id_name,
        secret_access_key_name=settings.kserve_s3_secret_access_key_name,
    )


def serving_limits(settings: Settings) -> ServingLimits:
    extra = {ns.strip() for ns in settings.allowed_namespaces.split(",") if ns.strip()}
    return ServingLimits(
        namespaces=frozenset(extra | {settings.namespace}),
        max_replicas=settings.tag_max_replicas,
        max_cpu=settings.tag_max_cpu,
        max_memory=settings.tag_max_memory,
        max_gpu=settings.tag_max_gpu,
    )


def serving_defaults(settings: Settings) -> ServingSpec:
    return ServingSpec(
        namespace=settings.namespace,
        # Either KServe name as input (RawDeployment/Serverless too); the current one emitted.
        deployment_mode=deployment_mode(settings.deployment_mode)
        if settings.deployment_mode
        else None,
        runtime=settings.runtime,
        min_replicas=settings.min_replicas,
        max_replicas=settings.max_replicas,
        cpu=settings.cpu,
        memory=settings.memory,
        gpu=settings.gpu,
        gpu_resource=settings.gpu_resource,
        canary_traffic_percent=settings.canary_traffic_percent,
    )


def runtime_packages(settings: Settings) -> dict:
    """What the runtime image provides: the file, else the setting, else the default profile."""
    text, source = settings.runtime_packages or DEFAULT_RUNTIME_PACKAGES, "BRIDGE_RUNTIME_PACKAGES"
    if settings.runtime_packages_file:
        source = settings.runtime_packages_file
        try:
            text = Path(source).read_text()
        except OSError as exc:
            raise UsageError(
                f"cannot read runtime packages file {source}: {exc.strerror}",
                hint="fix BRIDGE_RUNTIME_PACKAGES_FILE",
            ) from None
    try:
        return parse_provided(text)
    except ValueError as exc:
        raise UsageError(f"invalid runtime packages in {source}: {exc}") from None


def supported_versions(runtimes: dict[str, tuple[str, ...]], spec: ServingSpec) -> tuple[str, ...]:
    """modelFormat mlflow versions the model's runtime lists (any known runtime if auto)."""
    if spec.runtime:
        return runtimes[spec.runtime]
    return tuple(sorted({v for vs in runtimes.values() for v in vs}))


def _newer(candidate: str, than: str) -> bool:
    try:
        return int(candidate) > int(than)
    except ValueError:
        return False


@dataclass(frozen=True)
class _Fit:
    """What one published version (by content digest) asks of the runtime."""

    mlflow_major: str | None
    problems: tuple[str, ...]  # what the runtime image lacks
    empty: tuple[str, ...] = ()  # 0-byte files, which KServe's storage initializer skips


class _ReadAhead:
    """What one pass reads before it decides anything, started page by page while the
    listing goes on: the version each approval alias points to (from the listing itself
    when MLflow sent it along, else batched searches) and each version's published
    marker (one GET each, in parallel). An unchanged registry then costs the listing,
    one GET per version and few or no searches, mostly overlapped."""

    def __init__(self, registry: Registry, publisher: Publisher, aliases: tuple[str, ...]):
        self.registry = registry
        self.publisher = publisher
        self.aliases = aliases
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="bridge-marker")
        self._searches = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bridge-search")
        self._found: dict[tuple[str, str], ModelVersionInfo] = {}
        self._reads: list[Future[VersionReads]] = []
        self._markers: dict[tuple[str, str], Future] = {}

    def __enter__(self) -> _ReadAhead:
        return self

    def __exit__(self, *exc) -> None:
        for pool in (self.pool, self._searches):
            pool.shutdown(wait=True, cancel_futures=True)

    def add(self, approved: list[RegisteredModelInfo], batch: int = 100) -> None:
        pairs = [(m.name, m.aliases[a]) for m in approved for a in self.aliases if a in m.aliases]
        listed = listed_versions(approved, pairs)
        self._found.update(listed)
        missing = sorted(p for p in set(pairs) if p not in listed)
        names = sorted({n for n, _ in missing})
        for i in range(0, len(names), batch):
            chunk = set(names[i : i + batch])
            wanted = [p for p in missing if p[0] in chunk]
            self._reads.append(self._searches.submit(self.registry.model_versions, wanted))
        for name, version in pairs:
            key = (k8s_name(name), version)
            if key not in self._markers:
                self._markers[key] = self.pool.submit(self._marker, key)

    def _marker(self, key: tuple[str, str]) -> PublishedVersion | BridgeError | None:
        try:
            return self.publisher.published(*key)
        except BridgeError as exc:  # reported by the model it belongs to
            return exc

    def results(self):
        """(versions found, versions that could not be read, markers by (k8s name, version))."""
        reads = VersionReads(found=dict(self._found))
        for f in self._reads:
            reads.add(f.result())  # an outage stops the pass, as a failed listing does
        markers = {key: f.result() for key, f in self._markers.items()}
        return reads.found, reads.failed, markers


class Reconciler:
    def __init__(self, settings: Settings, registry: Registry, store: Store, kube=None):
        self.settings = settings
        self.registry = registry
        self.store = store
        self.publisher = Publisher(store)
        self.serving = serving_options(settings)
        self.defaults = serving_defaults(settings)
        self.limits = serving_limits(settings)
        self.removal = RemovalPolicy.from_settings(settings)
        self.runtimes = parse_runtimes(settings.runtimes)
        self.provided = runtime_packages(settings) if settings.runtime_fit != "off" else {}
        self._fit_cache: dict[str, _Fit] = {}  # published paths never change: cache by digest
        self._logged: set[str] = set()  # fit lines already logged: once per version, not per pass
        self._canary_waits: dict[str, str | None] = {}  # k8s name -> why its canary waits
        self._stage_hinted: set[str] = set()  # models told once that stages need BRIDGE_STAGE
        self._by_stage: set[str] = set()  # models this pass approves by BRIDGE_STAGE
        self._output_dir: str | None = None
        self._kube = kube
        self.verify = False
        # Read ahead by each pass (see _ReadAhead).
        self._infos: dict[tuple[str, str], ModelVersionInfo] = {}
        self._unreadable: dict[tuple[str, str], BridgeError] = {}
        self._markers: dict[tuple[str, str], PublishedVersion | BridgeError | None] = {}

    @property
    def kube(self):
        if self._kube is None:
            from bridge.kube import KubeClient

            self._kube = KubeClient.from_settings(self.settings)
        return self._kube

    def run_once(
        self, models: list[str] | None = None, output_dir: str | None = None, verify: bool = False
    ) -> SyncReport:
        self.verify = verify
        self._output_dir = output_dir
        alias = self.settings.alias
        self._by_stage = set()
        registered: list[RegisteredModelInfo] = []
        with _ReadAhead(
            self.registry, self.publisher, (alias, self.settings.canary_alias)
        ) as ahead:
            # The store check, the listing's pages and the reads for the models each page
            # approves all overlap: the listing is serial (page tokens), the rest is not.
            access = ahead.pool.submit(self.store.check_access)
            try:
                for page in self.registry.registered_model_pages(models):
                    page = self._approvals(page)
                    registered.extend(page)
                    ahead.add([m for m in page if alias in m.aliases])
            except BridgeError:
                access.result()  # an unreachable store is reported first, as it always was
                raise
            access.result()
            approved = [m for m in registered if alias in m.aliases]
            names, clashes = assign_names(approved)
            self._infos, self._unreadable, self._markers = ahead.results()

        report = SyncReport()
        desired: dict[str, dict] = {}
        for m in approved:
            if m.name in clashes:
                report.results.append(
                    ModelResult(m.name, k8s_name(m.name), "failed", error=clashes[m.name])
                )
                continue
            result, resource = self._sync_model(m, names[m.name])
            report.results.append(result)
            if resource is not None:
                desired[file_name(resource)] = resource

        in_scope: Callable[[str], bool]
        if models:
            scoped = {k8s_name(m.name) for m in registered}
            in_scope = lambda name: name.removesuffix(".yaml") in scoped  # noqa: E731
        else:
            in_scope = lambda _name: True  # noqa: E731
        if output_dir:
            report.output = self._write_output(output_dir, report, desired, in_scope)
        if self.settings.apply:
            report.cluster = self._apply(report, desired, in_scope)
        return report

    def _sync_model(self, m: RegisteredModelInfo, kname: str) -> tuple[ModelResult, dict | None]:
        version = m.aliases[self.settings.alias]
        result = ModelResult(m.name, kname, "failed", version=version)
        if m.name in self._by_stage:
            result.approved_by = f"stage {self.settings.stage}"
        try:
            spec = resolve(m.name, m.tags, self.defaults, self.runtimes, self.limits)
            pv, outcome = self._publish(m.name, kname, version)
            outcomes = {outcome}
            primary = self._fit(m.name, kname, pv, spec, result)
            canary = None
            canary_version = m.aliases.get(self.settings.canary_alias)
            if canary_version and _newer(canary_version, version):
                cpv, canary_outcome = self._publish(m.name, kname, canary_version)
                outcomes.add(canary_outcome)
                canary = self._fit(m.name, kname, cpv, spec, result)
                result.canary_version = canary_version
                result.bytes_copied += cpv.bytes_copied
            served = self._champion_served(m.name, kname, spec, primary) if canary else None
        except BridgeError as exc:
            result.error = exc
            return result, None
        resource = inference_service(
            DesiredService(
                m.name,
                kname,
                self.settings.alias,
                primary,
                spec,
                canary,
                self.settings.canary_alias,
                champion_served=served is None,
            ),
            self.serving,
        )
        if canary is not None:
            note = resource["metadata"]["annotations"].get(CANARY_STATE_ANNOTATION)
            if served is not None:
                note = f"waiting for the champion to be served: {served}"
            result.canary_state = note or "routed"
        result.state = next(o for o in ("repaired", "synced", "unchanged") if o in outcomes)
        result.storage_uri, result.digest = pv.storage_uri, pv.digest
        result.bytes_copied += pv.bytes_copied
        return result, resource

    def _champion_served(
        self, model: str, kname: str, spec: ServingSpec, champion: ServedVersion
    ) -> str | None:
        """None when every place this pass writes to serves the champion already (so the
        canary may be added); else why not, logged when it changes.

        KServe gives the first revision of a new InferenceService all traffic, whatever
        canaryTrafficPercent says, so a canary emitted with the champion's first
        deployment would serve everyone. Apply mode reads the live object; the GitOps
        directory knows only what the previous pass emitted."""
        why = None
        if self.settings.apply:
            from bridge.kube import INFERENCE_SERVICE

            live = self.kube.get(INFERENCE_SERVICE, spec.namespace, kname)
            why = champion_served(live, champion.storage_uri, live=True)
        if why is None and self._output_dir:
            why = champion_served(
                _read_manifest(Path(self._output_dir) / manifest_file_name(kname)),
                champion.storage_uri,
                live=False,
            )
        if why is None and not (self.settings.apply or self._output_dir):
            why = "nothing is deployed by this pass"
        if why is not None and self._canary_waits.get(kname) != why:
            log.info(
                "model %r: canary waits for the champion (version %s) to be served: %s",
                model,
                champion.version,
                why,
            )
        self._canary_waits[kname] = why
        return why

    def _approvals(self, page: list[RegisteredModelInfo]) -> list[RegisteredModelInfo]:
        """A page of the listing with stage approval applied (BRIDGE_STAGE), hinting once
        per model where stages are used without the alias."""
        alias, stage = self.settings.alias, self.settings.stage
        for m in page:
            if (approved_by(m, alias, stage) or "").startswith("stage"):
                self._by_stage.add(m.name)
            hint = stage_hint(m, alias, stage)
            if hint and m.name not in self._stage_hinted:
                self._stage_hinted.add(m.name)
                log.warning("%s", hint)
        return with_stage_approval(page, alias, stage)

    def _publish(self, model: str, kname: str, version: str) -> tuple[PublishedVersion, str]:
        """The published version and what this pass did: "synced" (copied now),
        "repaired" (--verify found damage and fixed it) or "unchanged"."""
        if (model, version) in self._unreadable:
            raise self._unreadable[(model, version)]
        info = self._infos.get((model, version)) or self.registry.model_version(model, version)
        if info.status != "READY":
            raise CheckFailed(f"model {model!r} version {version} is {info.status}, not READY")
        before = self._markers.pop((kname, version), None)
        if isinstance(before, BridgeError):
            raise before
        if before is None:
            before = self.publisher.published(kname, version)
        if before is None:
            info = self._with_download_uri(info)
            source = self.registry.artifact_source(info)
            return self.publisher.copy(info, source, kname), "synced"
        if not same_registry_version(before, info):
            info = self._with_download_uri(info)
            check_same_version(before, info)
        if not self.verify:
            return before, "unchanged"
        info = self._with_download_uri(info)
        check_same_version(before, info)
        pv, repaired = self.publisher.verify_and_repair(
            before, info, lambda: self.registry.artifact_source(info), kname
        )
        return pv, "repaired" if repaired else "unchanged"

    def _with_download_uri(self, info: ModelVersionInfo) -> ModelVersionInfo:
        """``info`` with the registry's download URI (one more request when batched)."""
        return info if info.download_uri else self.registry.model_version(info.name, info.version)

    def _fit(
        self, model: str, kname: str, pv: PublishedVersion, spec: ServingSpec, result: ModelResult
    ) -> ServedVersion:
        """Check the version against the runtime; pick a modelFormat version a runtime lists."""
        fit = self._fit_cache.get(pv.digest)
        if fit is None:
            needs = self.publisher.needs(kname, pv)
            fit = _Fit(
                needs.mlflow_major,
                tuple(needs.problems(self.provided)),
                tuple(empty_files(pv.files)) if self.settings.runtime_fit != "off" else (),
            )
            self._fit_cache[pv.digest] = fit
        runtime = spec.runtime or "the auto-selected runtime"
        problems = [*fit.problems, *empty_file_problems(list(fit.empty))]
        if problems:
            line = f"model {model!r} version {pv.version} may not load in {runtime}: " + "; ".join(
                problems
            )
            if self.settings.runtime_fit == "refuse":
                raise CheckFailed(line, hint=_fit_hint(fit))
            self._log_once(logging.WARNING, line)
            result.warnings.append(line)
        fmt = model_format_version(fit.mlflow_major, supported_versions(self.runtimes, spec))
        if fit.mlflow_major and fmt is None:
            self._log_once(
                logging.INFO,
                f"model {model!r} version {pv.version} was logged with MLflow {fit.mlflow_major}; "
                f"no known runtime lists modelFormat mlflow version {fit.mlflow_major}, so the "
                "InferenceService names the format without a version",
            )
        return _served(pv, fmt)

    def _log_once(self, level: int, line: str) -> None:
        """Log a line about a published version once per process: a daemon re-checks the
        same versions on every pass, and the same warning every 30 s buries the news."""
        if line not in self._logged:
            self._logged.add(line)
            log.log(level, "%s", line)

    def _write_output(self, output_dir, report, desired, in_scope) -> OutputChange:
        out = OutputDir(output_dir)
        files = {name: to_yaml(resource) for name, resource in desired.items()}
        # Each rendering carries bridge's label in its metadata, so a file equal to one is
        # bridge's own.
        existing = out.owned_files(rendered=files)
        namespaces = {
            r["metadata"]["namespace"] for r in desired.values() if r["kind"] == "InferenceService"
        }
        # A model that failed this pass keeps its previous manifest.
        for r in report.results:
            name = manifest_file_name(r.k8s_name)
            if r.error is not None and name in existing:
                files[name] = existing[name]
                namespaces.add(_namespace_of(existing[name]))
        # Each namespace that serves a model gets the predictors' ServiceAccount.
        namespaces -= {None}
        for ns in sorted(namespaces):
            sa = service_account(self.serving, ns)
            files[file_name(sa)] = to_yaml(sa)
        served = [n for n in existing if _is_service_file(n)]
        stale = [n for n in out.stale(files, in_scope) if _is_service_file(n)]
        refused = self.removal.check(len(served), len(stale), f"the output directory {out.path}")
        if refused is not None:
            log.error("%s", refused.one_line())
            report.refused.append(refused)
        change = out.reconcile(files, in_scope, prune=refused is None)
        for name in change.removed + change.held:
            if _is_service_file(name):
                state = "removed" if name in change.removed else "held"
                kname = name.removesuffix(".yaml")
                report.results.append(ModelResult(kname, kname, state))
        return change

    def _apply(self, report: SyncReport, desired: dict[str, dict], in_scope) -> ClusterChange:
        from bridge.cluster import reconcile_cluster

        services = list(desired.values())
        namespaces = {o["metadata"]["namespace"] for o in services}
        accounts = [service_account(self.serving, ns) for ns in sorted(namespaces)]
        failed = {r.k8s_name for r in report.results if r.error is not None}
        change = reconcile_cluster(
            self.kube,
            accounts + services,
            namespaces=namespaces | {self.settings.namespace},
            keep=failed,
            in_scope=lambda name: in_scope(manifest_file_name(name)),
            force=self.settings.apply_force,
            dry_run=self.settings.dry_run,
            removal=self.removal,
        )
        if change.refused is not None:
            report.refused.append(change.refused)
        by_name = {r.k8s_name: r for r in report.results}
        for name, exc in change.errors.items():
            r = by_name.get(name)
            if r is None:
                r = ModelResult(name, name, "failed")
                report.results.append(r)
            r.state, r.error = "failed", exc
        for ref, state in [(r, "removed") for r in change.pruned] + [
            (r, "held") for r in change.held
        ]:
            name = ref.rsplit("/", 1)[1]
            if name not in by_name and not (
                report.output
                and manifest_file_name(name) in report.output.removed + report.output.held
            ):
                report.results.append(ModelResult(name, name, state))
        return change


def _fit_hint(fit: _Fit) -> str:
    fixes = []
    if fit.problems:
        fixes.append(
            "use a runtime image that has them (tag bridge.runtime), describe the image in "
            "BRIDGE_RUNTIME_PACKAGES(_FILE)"
        )
    if fit.empty:
        fixes.append("give each empty file content (e.g. a comment) and register a new version")
    return ", or ".join(fixes) + ", or set BRIDGE_RUNTIME_FIT=warn"


def same_registry_version(pv: PublishedVersion, info: ModelVersionInfo) -> bool:
    """Is the published ``pv`` this registry version, judged without another request?

    Same model and the same run (run ids are unique), or the same registry source
    (a version's source never changes), is the same version. False means "not
    known": the caller checks against the registry's download URI.
    """
    if pv.model != info.name:
        return False
    if pv.run_id and pv.run_id == info.run_id:
        return True
    return bool(pv.registry_source) and pv.registry_source == info.source


def _is_service_file(name: str) -> bool:
    """``<name>.yaml`` is an InferenceService; ``<name>.<ns>.serviceaccount.yaml`` is not."""
    return name.count(".") == 1


def _read_manifest(path: Path) -> dict | None:
    """The InferenceService a previous pass wrote to ``path``; None if absent or unreadable."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


def _namespace_of(text: str) -> str | None:
    try:
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
        return doc["metadata"]["namespace"] if doc.get("kind") == "InferenceService" else None
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None


def _served(pv: PublishedVersion, format_version: str | None = None) -> ServedVersion:
    return ServedVersion(
        pv.version, pv.storage_uri, pv.digest, pv.run_id, pv.source_uri, format_version
    )
