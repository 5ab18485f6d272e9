"""Exit code 4 for bugs, everywhere exit codes are mapped (issue 13.10), and the bound on a
forged promotion lock's expiry (issue 13.9). Pure logic; the CLI runs are in tests/integration."""

from __future__ import annotations

import math

import pytest

from bridge.errors import CheckFailed, InternalError, TemporaryError, UsageError, worst_exit_code
from bridge.kfp_ops import parse_promote_result
from bridge.promote import LOCK_CLOCK_SKEW, lock_expiry


def test_an_internal_error_is_4_and_outranks_every_other_code():
    assert InternalError("x").exit_code == 4
    assert worst_exit_code([CheckFailed("a"), UsageError("b"), InternalError("c")]) == 4
    assert worst_exit_code([TemporaryError("a"), CheckFailed("b")]) == 3


def test_the_promote_component_reports_exit_4_as_an_internal_error():
    with pytest.raises(InternalError, match="internal error"):
        parse_promote_result(4, "", "error: internal error RuntimeError: boom\n")


NOW, TTL = 1_800_000_000.0, 120.0


@pytest.mark.parametrize(
    "value",
    [
        None,
        "soon",
        "",
        [1],
        {"a": 1},
        True,
        math.inf,
        -math.inf,
        math.nan,
        "1e999",
        1e308,
        NOW + TTL + LOCK_CLOCK_SKEW + 1,
    ],
)
def test_a_lock_expiry_no_bridge_could_write_is_stale(value):
    assert lock_expiry(value, NOW, TTL) is None


@pytest.mark.parametrize("value", [NOW - 5, NOW + TTL, str(NOW + 1), NOW + TTL + LOCK_CLOCK_SKEW])
def test_a_plausible_lock_expiry_is_kept(value):
    assert lock_expiry(value, NOW, TTL) == float(value)
