"""Library helpers that the recipes lean on: parallel runs that print in order."""

import math

import pytest

from hf_privacy_backdoor.utils import ordered_process_chain, ordered_process_map


def test_ordered_process_map_keeps_the_order_across_processes():
    # 3 calls on 2 spawned workers: the results come back in the items' order, equal to the sequential map
    items = [16.0, 1.0, 9.0]
    assert list(ordered_process_map(math.sqrt, items, workers=2)) == [4.0, 1.0, 3.0]
    assert list(ordered_process_map(math.sqrt, items, workers=1)) == [4.0, 1.0, 3.0]


def test_ordered_process_map_raises_the_first_failure():
    results = ordered_process_map(math.sqrt, [4.0, -1.0, 9.0], workers=2)
    assert next(results) == 2.0
    with pytest.raises(ValueError, match="math domain error"):
        next(results)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        list(ordered_process_map(math.sqrt, [1.0], workers=0))


def _negate(x):
    return -x


def test_ordered_process_chain_runs_each_follow_up_after_its_first_call_and_keeps_the_order():
    # the second call of an item starts once its first is done (here: sqrt of the first call's result);
    # items without a follow-up yield one result; queued in start_order, yielded in the items' order
    items = [16.0, 81.0, 9.0]

    def then(i, result):
        return None if i == 2 else (math.sqrt, result)

    expected = [[4.0, 2.0], [9.0, 3.0], [3.0]]
    assert list(ordered_process_chain(math.sqrt, items, 2, then=then, start_order=[2, 0, 1])) == expected
    assert list(ordered_process_chain(math.sqrt, items, 1, then=then)) == expected
    with pytest.raises(ValueError, match="start_order must be a permutation"):
        list(ordered_process_chain(math.sqrt, items, 2, start_order=[0, 0, 1]))


def test_ordered_process_chain_raises_a_failing_follow_up_after_the_items_before_it():
    results = ordered_process_chain(_negate, [1.0, 4.0], 2, then=lambda i, r: (math.sqrt, r) if i else None)
    assert next(results) == [-1.0]
    with pytest.raises(ValueError, match="math domain error"):
        next(results)
