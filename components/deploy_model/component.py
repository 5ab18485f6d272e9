"""KFP component `deploy-model`: render (and optionally apply) a KServe InferenceService."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Output

from bridge.kfp_ops import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def deploy_model(
    manifest: Output[Artifact],
    model_name: str,
    version: str,
    apply: bool = False,
    timeout_seconds: int = 900,
) -> NamedTuple("Outputs", [("isvc_name", str), ("applied", bool)]):
    """Render the KServe InferenceService for a model version; optionally apply it.

    Writes the YAML of `bridge render MODEL --version N` to the manifest artifact
    (storageUri under BRIDGE_TARGET_URI, the serving ServiceAccount, lineage
    annotations). With apply=true it then runs one `bridge sync --once --apply
    --model NAME` pass, which copies the version to the serving store and applies
    the InferenceService to the cluster; the approval alias (BRIDGE_ALIAS, default
    champion) must already point at this version, so run promote-model first.

    Args:
        model_name: Registered model name in MLflow.
        version: Version to deploy.
        apply: Also publish and apply to the cluster (needs `bridge sync --apply`).
        timeout_seconds: Deadline for rendering and applying.

    Returns:
        isvc_name: Name of the InferenceService.
        applied: True if it was applied to the cluster.
    """
    from bridge import kfp_ops

    result = kfp_ops.deploy_model(
        model_name=model_name,
        version=version,
        apply=apply,
        timeout_seconds=timeout_seconds,
    )
    with open(manifest.path, "w") as fh:
        fh.write(result.manifest)
    manifest.metadata.update({"model": model_name, "version": version, "kind": "InferenceService"})
    return (result.isvc_name, result.applied)
