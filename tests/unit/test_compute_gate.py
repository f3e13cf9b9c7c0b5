"""Prefetch policy: which priority classes' partitions a worker pauses (the Faust side of the
gate, incl. rebalances, is tested on the real broker in tests/integration)."""

from __future__ import annotations

import pytest

from compute.gate import PrefetchPolicy
from schemas.topics import Priority

I, D, B = Priority.INTERACTIVE, Priority.DISTRIBUTION, Priority.BACKGROUND  # noqa: E741 - the classes' initials


def test_a_class_is_held_at_its_limit_and_released_at_half() -> None:
    policy = PrefetchPolicy({I: 100, D: 10, B: 10})
    assert policy.update({B: 9}) == (set(), set())
    assert policy.update({B: 10}) == ({B}, set())
    assert policy.held == {B}
    assert policy.update({B: 6}) == (set(), set())  # above half: still held (no flapping)
    assert policy.update({B: 5}) == (set(), {B})
    assert policy.held == set()


def test_classes_are_independent_and_interactive_has_its_own_limit() -> None:
    policy = PrefetchPolicy({I: 100, D: 10, B: 10})
    hold, _ = policy.update({I: 50, D: 12, B: 40})
    assert hold == {D, B}  # interactive requests keep flowing while lower classes wait in Kafka
    _, release = policy.update({I: 50, D: 0, B: 40})
    assert release == {D} and policy.held == {B}


def test_classes_without_a_limit_are_never_held() -> None:
    policy = PrefetchPolicy({B: 1})
    assert policy.update({I: 10_000, B: 1}) == ({B}, set())


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PrefetchPolicy({B: 0})
