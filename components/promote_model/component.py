"""KFP component `promote-model`: the `bridge promote` gate, then move the alias."""

from typing import NamedTuple

from kfp import dsl

from bridge.kfp_ops import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def promote_model(
    model_name: str,
    version: str = "",
    from_alias: str = "",
    alias: str = "champion",
    require: list = [],  # noqa: B006 - KFP needs a literal default
    no_regression: list = [],  # noqa: B006
    dry_run: bool = False,
    timeout_seconds: int = 600,
) -> NamedTuple("Outputs", [("promoted", bool), ("version", str), ("alias", str), ("report", str)]):
    """Gate a model version and point an alias at it: runs `bridge promote`, the same gate CI uses.

    The task fails, naming every gate that said no, when the gate refuses the
    version (exit 1); it also fails on bad input (exit 2) or when MLflow cannot
    be reached (exit 3, retryable). Give exactly one of version or from_alias.
    MLflow is reached through MLFLOW_TRACKING_URI and MLflow's own credential
    variables.

    Args:
        model_name: Registered model name in MLflow.
        version: Version to promote (e.g. register-model's version).
        from_alias: Promote the version this alias points at (e.g. challenger).
        alias: Alias to move when the gates pass.
        require: Metric rules the version's run must meet, e.g. ["accuracy>=0.9"].
        no_regression: Metrics that must not be worse than the current alias holder's.
        dry_run: Run the gates without moving the alias.
        timeout_seconds: Deadline for the whole promotion.

    Returns:
        promoted: True if the alias now points at the version.
        version: The version that was gated.
        alias: The alias that was (or would be) moved.
        report: The JSON report of `bridge promote --output json` (every gate).
    """
    from bridge import kfp_ops

    result = kfp_ops.promote_model(
        model_name,
        version=version,
        from_alias=from_alias,
        alias=alias,
        require=require,
        no_regression=no_regression,
        dry_run=dry_run,
        timeout_seconds=timeout_seconds,
    )
    return (result.promoted, result.version, result.alias, result.report)
