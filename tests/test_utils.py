"""Library helpers that the recipes lean on: parallel runs that print in order."""

import math

import pytest

from hf_privacy_backdoor.utils import ordered_process_map


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
