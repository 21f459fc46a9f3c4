"""Service plumbing shared by every service (``freshrank.core.http``)."""

from __future__ import annotations

import gc

from freshrank.core.http import freeze_startup_heap


def test_the_startup_heap_is_left_out_of_later_collections() -> None:
    startup = [[index] for index in range(1000)]  # lives as long as the service
    gc.unfreeze()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() >= len(startup)
        collected = {id(obj) for obj in gc.get_objects()}  # what a full collection walks
        assert not any(id(obj) in collected for obj in startup)
    finally:
        gc.unfreeze()
