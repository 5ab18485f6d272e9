"""The mass-removal guard's rule (pure): share of what is served, and never all of it."""

from __future__ import annotations

import pytest

from bridge.prune_guard import MassRemovalRefused, RemovalPolicy
from bridge.settings import load_settings


@pytest.mark.parametrize(
    "fraction,served,removing,refused",
    [
        (0.5, 2, 1, False),  # half is not more than half
        (0.5, 3, 2, True),
        (0.5, 10, 5, False),
        (0.5, 10, 6, True),
        (0.5, 1, 1, True),  # every served model
        (1.0, 3, 2, False),
        (1.0, 3, 3, True),  # 1 is "any share but all"
        (0.0, 5, 1, True),
        (0.5, 0, 0, False),  # nothing served, nothing to remove
        (0.5, 4, 0, False),
    ],
)
def test_rule(fraction, served, removing, refused):
    why = RemovalPolicy(fraction).why_refused(served, removing)
    assert (why is not None) is refused, why


def test_allowed_lets_everything_through():
    assert RemovalPolicy(0.5, allowed=True).check(3, 3, "x") is None


def test_refusal_is_one_line_with_exit_code_1():
    err = RemovalPolicy(0.5).check(3, 2, "the cluster")
    assert isinstance(err, MassRemovalRefused) and err.exit_code == 1
    line = err.one_line()
    assert "\n" not in line
    assert line.startswith("refusing to remove 2 served InferenceService(s) from the cluster")
    assert "more than BRIDGE_MAX_REMOVAL_FRACTION=0.5" in line
    assert "--allow-mass-removal" in line and "BRIDGE_ALLOW_MASS_REMOVAL" in line


def test_settings():
    s = load_settings(env={})
    assert (s.max_removal_fraction, s.allow_mass_removal) == (0.5, False)
    s = load_settings(
        env={"BRIDGE_MAX_REMOVAL_FRACTION": "0.25", "BRIDGE_ALLOW_MASS_REMOVAL": "true"}
    )
    assert RemovalPolicy.from_settings(s) == RemovalPolicy(0.25, True)
    from bridge.errors import UsageError

    with pytest.raises(UsageError, match="between 0 and 1"):
        load_settings(env={"BRIDGE_MAX_REMOVAL_FRACTION": "1.5"})
