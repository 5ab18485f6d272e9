"""Which version of a registered model is approved (pure).

Approval is an alias (``BRIDGE_ALIAS``, default ``champion``). Registries still on
MLflow 2 stages (deprecated since MLflow 2.9, still in MLflow 3) may opt in to
stage-based approval with ``BRIDGE_STAGE``: a model *without* the alias is approved by
its latest version in that stage. The alias always wins when both exist.
"""

from __future__ import annotations

from dataclasses import replace

from bridge.registry import RegisteredModelInfo


def with_stage_approval(
    models: list[RegisteredModelInfo], alias: str, stage: str | None
) -> list[RegisteredModelInfo]:
    """``models`` with the approval alias filled in from ``stage`` where the alias is unset."""
    if not stage:
        return models
    return [
        replace(m, aliases={**m.aliases, alias: m.stages[stage]})
        if alias not in m.aliases and stage in m.stages
        else m
        for m in models
    ]


def approved_by(m: RegisteredModelInfo, alias: str, stage: str | None) -> str | None:
    """How ``m``'s approved version was chosen: ``alias <name>``, ``stage <Stage>`` or None."""
    if alias in m.aliases:
        return f"alias {alias}"
    if stage and stage in m.stages:
        return f"stage {stage}"
    return None


def stage_hint(m: RegisteredModelInfo, alias: str, stage: str | None) -> str | None:
    """One line for a model that uses stages but is not approved, so it is not ignored
    silently; None when there is nothing to say."""
    if alias in m.aliases or not m.stages or (stage and stage in m.stages):
        return None
    used = ", ".join(f"version {v} in stage {s!r}" for s, v in sorted(m.stages.items()))
    if stage:
        how = f"set alias {alias!r}, or move a version to stage {stage!r}"
    else:
        how = (
            f"set alias {alias!r} on the version to serve (MLflow stages are deprecated), "
            "or set BRIDGE_STAGE to approve by stage"
        )
    return f"model {m.name!r} has {used} but no alias {alias!r}, so it is not served: {how}"
