"""KFP component `fetch-model`: resolve a registered model version to a KFP Model artifact."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Model, Output

from bridge.kfp_ops import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def fetch_model(
    model: Output[Model],
    model_name: str,
    alias: str = "",
    version: str = "",
    download: bool = True,
    timeout_seconds: int = 600,
) -> NamedTuple("Outputs", [("version", str), ("model_uri", str)]):
    """Resolve `name@alias` or a version of a registered MLflow model.

    Outputs a KFP Model artifact (the model's files, MLmodel at its root, unless
    download is false) whose metadata names the registered model, version,
    models:/ URI, source and run id, plus the version and URI as parameters.
    Give the alias either as model_name="churn@champion" or as alias="champion";
    give exactly one of an alias or a version.

    Args:
        model_name: Registered model name, or NAME@ALIAS.
        alias: Alias to resolve (instead of version).
        version: Version number to fetch (instead of alias).
        download: Copy the model files into the Model artifact.
        timeout_seconds: Deadline for resolving and downloading.

    Returns:
        version: The resolved version number.
        model_uri: models:/<name>/<version>.
    """
    from bridge import kfp_ops

    result = kfp_ops.fetch_model(
        model_name=model_name,
        alias=alias,
        version=version,
        download_to=model.path if download else None,
        timeout_seconds=timeout_seconds,
    )
    model.metadata.update(result.metadata)
    return (result.version, result.model_uri)
