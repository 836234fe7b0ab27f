"""The local broker's KRaft cluster id: a form `kafka-storage format --cluster-id` always accepts."""

from __future__ import annotations

import base64

from smartflow_devstack.kafka import _cluster_id


def test_cluster_ids_are_uuids_that_never_start_with_a_dash() -> None:
    ids = [_cluster_id() for _ in range(5000)]  # about 78 would start with "-" by chance
    assert not any(found.startswith("-") for found in ids)
    assert len(set(ids)) == len(ids)
    assert all(len(base64.urlsafe_b64decode(found + "==")) == 16 for found in ids)
