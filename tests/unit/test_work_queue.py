"""The daemon's coalescing work queue."""

from __future__ import annotations

import threading

from bridge.daemon import FULL, WorkQueue


def test_burst_of_the_same_model_becomes_one_item():
    q = WorkQueue(debounce=0.0)
    for _ in range(100):
        q.put("fraud")
    q.put("churn")
    assert q.get(timeout=1) == (False, {"fraud", "churn"})
    assert q.get(timeout=0.01) is None


def test_full_pass_absorbs_models():
    q = WorkQueue(debounce=0.0)
    q.put("fraud")
    q.put(FULL)
    full, models = q.get(timeout=1)
    assert full is True
    assert len(q) == 0


def test_debounce_collects_items_that_arrive_together():
    q = WorkQueue(debounce=0.2)
    q.put("a")
    threading.Timer(0.05, q.put, ["b"]).start()
    assert q.get(timeout=2) == (False, {"a", "b"})


def test_close_wakes_a_waiting_worker():
    q = WorkQueue(debounce=0.0)
    threading.Timer(0.05, q.close).start()
    assert q.get(timeout=30) is None
