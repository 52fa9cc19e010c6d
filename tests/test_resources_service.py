"""ResourceService on every datastore backend: atomic batches, identity, CAS, races, pool delete (reference 1.3)."""

from __future__ import annotations

import ipaddress
import re
import threading
import uuid

import pytest

from topoipam.errors import AlreadyExistsError, ConflictError, NotFoundError, ValidationError
from topoipam.model.types import IPPool, IPPoolSpec, Metadata, Node
from topoipam.resources import repo
from topoipam.resources.keys import POOL_GUARD_KEY
from topoipam.resources.service import ResourceService, merge_patch
from topoipam.ipam.pool_blocks import PoolBlocks


def pool(name, cidr, **spec):
    return IPPool(Metadata(name=name), IPPoolSpec(cidr=cidr, **spec))


def node(name, **labels):
    return Node(Metadata(name=name, labels=dict(labels)))


def everything(store):
    return [(r.key, r.value, r.revision) for r in store.list("/")]


def test_create_sets_identity_and_read_carries_revision(store):
    svc = ResourceService(store, PoolBlocks(store))
    result = svc.create([pool("p1", "10.0.0.0/24"), node("n1")])
    assert [r.name for r in result.written] == ["p1", "n1"]
    p1 = svc.get("IPPool", ["p1"])[0]
    assert uuid.UUID(p1.metadata.uid).version == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", p1.metadata.creation_timestamp)
    assert p1.metadata.resource_version == str(store.get("/topoipam/v3/ippools/p1").revision)
    assert p1.spec.block_size == 26 and p1.spec.node_selector == "all()"


def test_batch_is_all_or_nothing_and_names_the_failing_document(store):
    svc = ResourceService(store, PoolBlocks(store))
    svc.create([node("n0")])
    before = everything(store)
    with pytest.raises(ValidationError) as exc:
        svc.create([pool("a", "10.1.0.0/24"), node("n1"), pool("c", "10.1.0.128/25")])
    assert exc.value.document == (3, "IPPool", "c")
    assert "IPPool(c) CIDR overlaps with IPPool(a) CIDR 10.1.0.0/24" in exc.value.message
    assert everything(store) == before


def test_create_existing_and_skip_exists(store):
    svc = ResourceService(store, PoolBlocks(store))
    svc.create([node("n1")])
    with pytest.raises(AlreadyExistsError, match=r"resource already exists: Node\(n1\)"):
        svc.create([node("n2"), node("n1")])
    assert [n.name for n in svc.list("Node")] == ["n1"]
    result = svc.create([node("n2"), node("n1")], skip_exists=True)
    assert ([r.name for r in result.written], [r.name for r in result.skipped]) == (["n2"], ["n1"])


def test_apply_with_stale_resource_version_is_refused(store):
    svc = ResourceService(store, PoolBlocks(store))
    svc.create([node("n1")])
    old = svc.get("Node", ["n1"])[0]
    svc.label("Node", "n1", "rack", "0")
    old.metadata.labels = {"rack": "9"}
    with pytest.raises(ConflictError, match=r"^update conflict: Node\(n1\)$"):
        svc.apply([old])
    assert svc.get("Node", ["n1"])[0].labels == {"rack": "0"}


def test_replace_requires_existence(store):
    with pytest.raises(NotFoundError, match=r"resource does not exist: Node\(x\) with error: <nil>"):
        ResourceService(store, PoolBlocks(store)).replace([node("x")])


def test_blocks_of_another_size_block_a_new_pool(store):
    from topoipam.ipam import keys

    # A block left behind by an earlier pool with blockSize 28 (blocks outlive their pool).
    store.create(keys.block_key(ipaddress.ip_network("10.7.0.16/28")), b"{}")
    svc = ResourceService(store, PoolBlocks(store))
    with pytest.raises(ValidationError, match="IPPool blocksSize conflicts with existing allocations"):
        svc.create([pool("p", "10.7.0.0/24")])
    svc.create([pool("p", "10.7.0.0/24", block_size=28)])  # same size: fine
    svc.create([pool("q", "10.7.1.0/24")])  # no blocks there


def test_concurrent_overlapping_creates_admit_exactly_one(store):
    """Different names, same CIDR, at once: the pool guard makes the overlap rule race-free."""
    svc = ResourceService(store, PoolBlocks(store))
    outcomes = []
    barrier = threading.Barrier(6)

    def create(i):
        barrier.wait()
        try:
            svc.create([pool(f"p{i}", "10.9.0.0/24")])
            outcomes.append("ok")
        except ValidationError as err:
            assert "overlaps" in err.message
            outcomes.append("overlap")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["overlap"] * 5
    assert len(repo.list_pools(store)) == 1
    assert store.get(POOL_GUARD_KEY) is not None


def test_concurrent_labels_all_land(store):
    svc = ResourceService(store, PoolBlocks(store))
    svc.create([node("n1")])

    def label(i):
        for j in range(5):
            svc.label("Node", "n1", f"k{i}-{j}", str(j))

    threads = [threading.Thread(target=label, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(svc.get("Node", ["n1"])[0].labels) == 20


def test_label_and_unlabel(store):
    svc = ResourceService(store, PoolBlocks(store))
    svc.create([node("n1")])
    assert svc.label("Node", "n1", "rack", "0") == "set"
    assert svc.label("Node", "n1", "rack", "0") == "updated"
    with pytest.raises(AlreadyExistsError, match="please use '--overwrite'"):
        svc.label("Node", "n1", "rack", "1", typed_kind="nodes")
    assert svc.label("Node", "n1", "rack", "1", overwrite=True) == "updated"
    svc.unlabel("Node", "n1", "rack")
    with pytest.raises(NotFoundError, match="key rack does not exist"):
        svc.unlabel("Node", "n1", "rack")
    with pytest.raises(NotFoundError, match="^nodes ghost not found$"):
        svc.label("Node", "ghost", "a", "b", typed_kind="nodes")


def test_patch_and_merge_patch():
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": None, "e": 4}, "f": [1]}) == \
        {"a": 1, "b": {"d": 3, "e": 4}, "f": [1]}
    assert merge_patch({"a": 1}, "x") == "x"


def test_patch_keeps_identity(store):
    svc = ResourceService(store, PoolBlocks(store))
    svc.create([pool("p1", "10.0.0.0/24")])
    before = svc.get("IPPool", ["p1"])[0]
    after = svc.patch("IPPool", "p1", '{"spec": {"natOutgoing": true}}')
    assert after.spec.nat_outgoing and after.metadata.uid == before.metadata.uid
    with pytest.raises(ConflictError):
        svc.patch("IPPool", "p1", '{"metadata": {"resourceVersion": "%s"}}' % before.metadata.resource_version)


def test_delete_reports_each_item(store):
    svc = ResourceService(store, PoolBlocks(store))
    svc.create([node("n1"), node("n2")])
    results = svc.delete([("Node", "n1"), ("Node", "ghost"), ("Node", "n2")])
    assert [(k, n, type(e).__name__ if e else None) for k, n, e in results] == [
        ("Node", "n1", None), ("Node", "ghost", "NotFoundError"), ("Node", "n2", None)]
    assert svc.list("Node") == []


def test_pool_delete_releases_affinities_and_keeps_allocations(store):
    """Reference 1.3: disable, release affinities (empty blocks go, used blocks stay unaffine), delete."""
    from topoipam.ipam import AssignRequest, IpamService
    from topoipam.ipam import keys as ipam_keys

    svc = ResourceService(store, PoolBlocks(store))
    svc.create([node("kube-node-0", rack="0"), pool("rack-0", "192.168.0.0/24", node_selector='rack == "0"')])
    ipam = IpamService(store)
    ip = ipam.auto_assign(AssignRequest(node="kube-node-0", handle="h1", num4=1)).ipv4[0]
    used = ipaddress.ip_network(ip.network)
    empty = next(b for b in ipaddress.ip_network("192.168.0.0/24").subnets(new_prefix=26) if b != used)
    ipam.claim_affinity(str(empty), "kube-node-0")  # a second, empty affine block
    host_prefix = ipam_keys.ROOT + "host/kube-node-0/"
    assert len(store.list(host_prefix)) == 2

    assert svc.delete([("IPPool", "rack-0")]) == [("IPPool", "rack-0", None)]
    assert repo.list_pools(store) == []
    assert store.list(host_prefix) == []  # no affinities left
    blocks = store.list(ipam_keys.block_prefix(4))
    assert len(blocks) == 1  # the empty block went, the used one stays
    assert ipam.ips_by_handle("h1") == [ip.ip]  # the workload keeps its address (invariant 4)


def test_pool_delete_of_missing_pool(store):
    [(kind, name, err)] = ResourceService(store, PoolBlocks(store)).delete([("IPPool", "nope")])
    assert isinstance(err, NotFoundError) and err.message == "resource does not exist: IPPool(nope) with error: <nil>"


@pytest.mark.parametrize("disabled_before", [False, True])
def test_failed_pool_delete_leaves_the_pool_as_it_was(sqlite_url, disabled_before):
    """Invariant 5: the affinity release fails (its datastore became unavailable), so the pool is not
    deleted and is enabled again (unless it was disabled before the delete); the message says so."""
    from topoipam.errors import DatastoreUnavailableError
    from topoipam.store import open_store

    with open_store(sqlite_url) as store:
        gone = open_store(sqlite_url)
        gone.close()
        ResourceService(store, PoolBlocks(store)).create([pool("rack-0", "192.168.0.0/24", disabled=disabled_before)])
        [(_, _, err)] = ResourceService(store, PoolBlocks(gone)).delete([("IPPool", "rack-0")])
        assert isinstance(err, DatastoreUnavailableError)
        [stored] = repo.list_pools(store)
        assert stored.spec.disabled is disabled_before
        said = "it stays disabled, as it was before" if disabled_before else "was enabled again"
        assert err.message.endswith(f"IPPool(rack-0) was not deleted and {said}" if not disabled_before
                                    else f"IPPool(rack-0) was not deleted ({said})"), err.message


def test_one_guard_helper_and_one_identity_stamp_for_create_and_split(store):
    """Pool create and ``resources.split`` share the guard op and the identity stamp (resources.service)."""
    from topoipam.resources.service import guard_op
    from topoipam.resources.split import split_pool
    from topoipam.store.base import Create, Update

    assert guard_op(store, "/test/guard") == Create("/test/guard", b"{}")
    revision = store.commit([guard_op(store, "/test/guard")])
    assert guard_op(store, "/test/guard") == Update("/test/guard", b"{}", revision)

    svc = ResourceService(store, PoolBlocks(store))
    [parent] = svc.create([pool("p", "10.9.0.0/24")]).written
    guard_before = store.get(POOL_GUARD_KEY).revision
    _, children = split_pool(store, 2, name="p")
    assert store.get(POOL_GUARD_KEY).revision > guard_before
    for child in [parent, *children]:
        uuid.UUID(child.metadata.uid)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", child.metadata.creation_timestamp)
    assert len({c.metadata.uid for c in [parent, *children]}) == 3
    stored = repo.list_pools(store)
    assert [(p.name, p.metadata.uid) for p in stored] == [(c.name, c.metadata.uid) for c in children]
