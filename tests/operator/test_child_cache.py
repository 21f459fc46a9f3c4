"""The operator's cache of children: what the watches and the reconciles' answers hold."""

from typing import Any

from freshrank_operator import crd
from freshrank_operator.controller import ChildCache

OWNER = "cr-uid"
KEY = ("v1", "Service", "shop-ranking")


def _service(resource_version: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "shop-ranking",
            "namespace": "shop",
            "resourceVersion": str(resource_version),
            "ownerReferences": [{"kind": crd.KIND, "uid": OWNER, "controller": True}],
        },
    }


def test_an_apply_answer_from_before_a_deletion_does_not_bring_the_child_back() -> None:
    """A reconcile caches its apply answers once every child is applied; someone may delete a
    child in between. The next reconcile must find it missing (and create it again), not find
    the answer and call it unchanged."""
    cache = ChildCache()
    assert cache.drop_child(_service(12), "v1", "Service") == OWNER  # DELETED event first
    cache.put_child(_service(10), "v1", "Service")  # then the answer of the earlier apply
    assert KEY not in cache.owned(OWNER)
    cache.put_child(_service(15), "v1", "Service")  # created again: cached again
    assert cache.owned(OWNER)[KEY]["metadata"]["resourceVersion"] == "15"
    assert cache.deleted == {}


def test_a_late_watch_event_never_replaces_a_newer_cached_child() -> None:
    cache = ChildCache()
    cache.put_child(_service(20), "v1", "Service")
    cache.put_child(_service(18), "v1", "Service")
    assert cache.owned(OWNER)[KEY]["metadata"]["resourceVersion"] == "20"


def test_forgetting_an_owner_forgets_its_deleted_children_too() -> None:
    cache = ChildCache()
    cache.drop_child(_service(12), "v1", "Service")
    cache.forget_owner(OWNER)
    assert cache.deleted == {}
    cache.put_child(_service(10), "v1", "Service")  # a new owner's history starts afresh
    assert KEY in cache.owned(OWNER)
