"""The mass-removal guard: one pass may not remove most (or all) of what is served (pure).

A registry that answers but lists no approved models (a fresh database, a wrong
``MLFLOW_TRACKING_URI``) looks exactly like "every model was retired". Bridge cannot
tell the two apart, so a pass that would remove more than
``BRIDGE_MAX_REMOVAL_FRACTION`` of the served models, or every one of them, removes
nothing and says why, until someone confirms with ``--allow-mass-removal`` (or
``BRIDGE_ALLOW_MASS_REMOVAL=true``). The GitOps directory and the cluster are each
judged on their own, by the same rule; ``bridge status`` asks the same question.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.errors import CheckFailed

FRACTION_SETTING = "BRIDGE_MAX_REMOVAL_FRACTION"
ALLOW_HINT = (
    "if the registry is right, run once with `bridge sync --once --allow-mass-removal` "
    "(or set BRIDGE_ALLOW_MASS_REMOVAL=true); if not, check MLFLOW_TRACKING_URI and the "
    "approval alias"
)


class MassRemovalRefused(CheckFailed):
    """A pass would have removed too much of what is served; it removed nothing."""


@dataclass(frozen=True)
class RemovalPolicy:
    max_fraction: float = 0.5
    allowed: bool = False

    @classmethod
    def from_settings(cls, settings) -> RemovalPolicy:
        return cls(settings.max_removal_fraction, settings.allow_mass_removal)

    def why_refused(self, served: int, removing: int) -> str | None:
        """Why removing ``removing`` of ``served`` models in one pass is refused, or None."""
        if self.allowed or removing <= 0 or served <= 0:
            return None
        if removing >= served:
            return f"that is every served model ({removing} of {served})"
        if removing / served > self.max_fraction:
            return (
                f"that is {removing} of {served}, more than {FRACTION_SETTING}="
                f"{self.max_fraction:g}"
            )
        return None

    def check(self, served: int, removing: int, where: str) -> MassRemovalRefused | None:
        why = self.why_refused(served, removing)
        if why is None:
            return None
        return MassRemovalRefused(
            f"refusing to remove {removing} served InferenceService(s) from {where} in one "
            f"pass: {why}; nothing was removed",
            hint=ALLOW_HINT,
        )
