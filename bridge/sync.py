"""The reconciler: registry aliases -> published versions -> emitted manifests.

One pass lists registered models, publishes the version each approval alias
points to, and makes the output directory match. A model that fails keeps
whatever it had before (a live endpoint is never removed because MLflow or S3
hiccuped); only a model whose alias is gone loses its manifest.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.errors import BridgeError, CheckFailed, worst_exit_code
from bridge.gitops import OutputChange, OutputDir
from bridge.names import k8s_name
from bridge.publish import PublishedVersion, Publisher, check_same_version
from bridge.registry import RegisteredModelInfo, Registry
from bridge.serving import DesiredService, ServedVersion, ServingOptions, inference_service, to_yaml
from bridge.settings import Settings
from bridge.store import Store

log = logging.getLogger(__name__)


@dataclass
class ModelResult:
    name: str
    k8s_name: str
    state: str  # "synced" | "unchanged" | "repaired" | "removed" | "failed"
    version: str | None = None
    storage_uri: str | None = None
    digest: str | None = None
    bytes_copied: int = 0
    error: BridgeError | None = None

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "error"}
        d["error"] = self.error.one_line() if self.error else None
        return d


@dataclass
class SyncReport:
    results: list[ModelResult] = field(default_factory=list)
    output: OutputChange | None = None

    @property
    def errors(self) -> list[BridgeError]:
        return [r.error for r in self.results if r.error is not None]

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


class Reconciler:
    def __init__(self, settings: Settings, registry: Registry, store: Store):
        self.settings = settings
        self.registry = registry
        self.store = store
        self.publisher = Publisher(store)
        self.verify = False
        self.serving = ServingOptions(
            namespace=settings.namespace, service_account=settings.service_account
        )

    def run_once(
        self, models: list[str] | None = None, output_dir: str | None = None, verify: bool = False
    ) -> SyncReport:
        self.verify = verify
        self.store.check_access()
        registered = self.registry.registered_models(models)
        alias = self.settings.alias
        approved = [m for m in registered if alias in m.aliases]
        names, clashes = assign_names(approved)

        report = SyncReport()
        desired: dict[str, str] = {}
        for m in approved:
            if m.name in clashes:
                report.results.append(
                    ModelResult(m.name, k8s_name(m.name), "failed", error=clashes[m.name])
                )
                continue
            result, resource = self._sync_model(m, names[m.name])
            report.results.append(result)
            if resource is not None:
                desired[manifest_file_name(result.k8s_name)] = to_yaml(resource)

        if output_dir:
            report.output = self._write_output(output_dir, report, desired, registered, models)
        for r in report.results:
            if r.error:
                log.error("%s: %s", r.name, r.error.one_line())
        return report

    def _sync_model(self, m: RegisteredModelInfo, kname: str) -> tuple[ModelResult, dict | None]:
        version = m.aliases[self.settings.alias]
        try:
            info = self.registry.model_version(m.name, version)
            if info.status != "READY":
                raise CheckFailed(f"model {m.name!r} version {version} is {info.status}, not READY")
            before = self.publisher.published(kname, version)
            if before is not None:
                check_same_version(before, info)
            repaired = False
            if before is not None and self.verify:
                before, repaired = self.publisher.verify_and_repair(
                    before, info, lambda: self.registry.artifact_source(info.download_uri), kname
                )
            pv = before or self.publisher.copy(
                info, self.registry.artifact_source(info.download_uri), kname
            )
        except BridgeError as exc:
            return ModelResult(m.name, kname, "failed", version=version, error=exc), None
        resource = inference_service(
            DesiredService(m.name, kname, self.settings.alias, _served(pv)), self.serving
        )
        state = "synced" if before is None else "repaired" if repaired else "unchanged"
        return (
            ModelResult(m.name, kname, state, version, pv.storage_uri, pv.digest, pv.bytes_copied),
            resource,
        )

    def _write_output(self, output_dir, report, desired, registered, models) -> OutputChange:
        out = OutputDir(output_dir)
        existing = out.owned_files()
        # A model that failed this pass keeps its previous manifest.
        for r in report.results:
            name = manifest_file_name(r.k8s_name)
            if r.error is not None and name in existing:
                desired[name] = existing[name]
        in_scope: Callable[[str], bool]
        if models:
            scoped = {manifest_file_name(k8s_name(m.name)) for m in registered}
            in_scope = scoped.__contains__
        else:
            in_scope = lambda _name: True  # noqa: E731
        change = out.reconcile(desired, in_scope)
        for name in change.removed:
            report.results.append(
                ModelResult(name.removesuffix(".yaml"), name.removesuffix(".yaml"), "removed")
            )
        return change


def _served(pv: PublishedVersion) -> ServedVersion:
    return ServedVersion(pv.version, pv.storage_uri, pv.digest, pv.run_id, pv.source_uri)
