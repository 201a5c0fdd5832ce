"""The inode table's nodes (fs/inodes.py): what a node keeps compactly reads back as given."""

from __future__ import annotations

import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3mpfs.errors import NotFound
from s3mpfs.fs.inodes import InodeTable
from s3mpfs.fs.node import Node
from s3mpfs.s3.metadata import Attributes


@pytest.mark.parametrize("etag", [
    '"d41d8cd98f00b204e9800998ecf8427e"',  # a plain object's: kept as a number
    '"00000000000000000000000000000000"',
    '"D41D8CD98F00B204E9800998ECF8427E"',  # any other form: kept as is
    '"d41d8cd98f00b204e9800998ecf8427e-3"',
    '"0x1d8cd98f00b204e9800998ecf8427e"',
    '"d41d8cd98f00b204_9800998ecf8427e"',
    "d41d8cd98f00b204e9800998ecf8427e",
    "",
])
def test_an_etag_reads_back_exactly_as_given(etag: str) -> None:
    node = Node(2, "f", Attributes(stat.S_IFREG | 0o644, 0, 0, 10**9))
    node.etag = etag
    assert node.etag == etag and type(node.etag) is str


def test_the_table_finds_counts_and_forgets_nodes_across_chunks() -> None:
    table = InodeTable(Attributes(stat.S_IFDIR | 0o755, 0, 0, 10**9))
    attrs = Attributes(stat.S_IFREG | 0o644, 0, 0, 10**9)
    nodes = [table.put(f"f{i}", attrs) for i in range(3000)]  # (three chunks)
    for node in nodes:
        table.remember(node)
    assert len(table) == 3001 and table.get(nodes[2500].inode) is nodes[2500]
    assert {n.inode for n in table.nodes()} == {1} | {n.inode for n in nodes}
    for node in nodes[:2500]:  # (inodes 2 to 2501)
        table.forget(node.inode, 1)
    assert len(table) == 501 and table.at("f5") is None
    with pytest.raises(NotFound):
        table.get(nodes[5].inode)
    with pytest.raises(NotFound):
        table.get(10**12)
    assert table.get(nodes[2999].inode) is nodes[2999]
    assert sorted(table._by_inode._chunks) == [0, 2]  # the root's, and 2048 on


def test_whether_metadata_is_known_and_settled_are_kept_apart() -> None:
    node = Node(2, "f", Attributes(stat.S_IFREG | 0o644, 0, 0, 10**9))
    assert (node.meta_known, node.settled) == (False, False)
    node.settled = True
    assert (node.meta_known, node.settled) == (False, True)
    node.meta_known = True
    node.meta_known = True
    assert (node.meta_known, node.settled) == (True, True)
    node.settled = False
    assert (node.meta_known, node.settled) == (True, False)
    node.meta_known = False
    assert (node.meta_known, node.settled) == (False, False)
    assert Node(3, "g", node.attrs, meta_known=True).meta_known is True


def test_equal_etags_set_lately_are_one_number() -> None:
    attrs = Attributes(stat.S_IFREG | 0o644, 0, 0, 10**9)
    first, second = Node(2, "a", attrs), Node(3, "b", attrs)
    first.etag = '"d41d8cd98f00b204e9800998ecf8427e"'
    second.etag = "".join(['"d41d8cd98f00b204e9800998ecf8427e"'])  # another str object
    assert first._etag is second._etag and second.etag == first.etag


def _node_state(node: Node) -> tuple[object, ...]:
    return (node.inode, node.path, node.attrs, node.size, node.etag, node.last_modified,
            node.lookups, node.meta_known, node.settled, node.symlink_target)


def test_a_node_only_the_table_holds_is_packed_and_reads_back_as_it_was() -> None:
    table = InodeTable(Attributes(stat.S_IFDIR | 0o755, 0, 0, 10**9))
    etags = ['"d41d8cd98f00b204e9800998ecf8427e"', '"0123456789abcdef0123456789abcdef-12"', ""]
    for i in range(3000):
        node = table.put(f"d/f{i}", Attributes(stat.S_IFREG | 0o600 + i % 64, i, 2**32 - 2,
                                               -i * 10**9 - 7, 2**62 + i, i, rdev=2**64 - 1))
        node.size, node.etag = i * 2**40, etags[i % 3]
        node.last_modified = None if i % 2 else i + 0.123456789
        node.meta_known, node.lookups = bool(i % 5), i % 7
    before = {n.inode: _node_state(n) for n in table.nodes()}
    del node
    table.pack_idle()
    assert [n.inode for n in table.nodes()] == [1]  # only the root is an object now
    assert len(table) == 3001
    for inode, state in before.items():
        node = table.get(inode)
        assert _node_state(node) == state
        assert table.at(node.path) is node  # one object per inode once unpacked


def test_a_node_held_or_with_more_than_a_row_holds_stays_one_object() -> None:
    table = InodeTable(Attributes(stat.S_IFDIR | 0o755, 0, 0, 10**9))
    held = table.put("held", Attributes(stat.S_IFREG | 0o644, 0, 0, 10**9))
    linked = table.put("link", Attributes(stat.S_IFLNK | 0o777, 0, 0, 10**9))
    linked.symlink_target = "held"  # (a rare field)
    tagged = table.put("x", Attributes(stat.S_IFREG | 0o644, 0, 0, 10**9, xattrs={"a": b"1"}))
    listed = table.put("listed", Attributes(stat.S_IFREG | 0o644, 0, 0, 10**9))
    listed.handles = 1
    inodes = [n.inode for n in (linked, tagged, listed)]
    del linked, tagged, listed
    table.pack_idle()
    held.size = 5  # a change through a reference kept across the pass
    assert table.get(held.inode) is held and table.at("held").size == 5
    assert {n.inode for n in table.nodes()} == {1, held.inode, *inodes}


def test_a_packed_node_is_forgotten_by_its_row() -> None:
    table = InodeTable(Attributes(stat.S_IFDIR | 0o755, 0, 0, 10**9))
    node = table.put("f", Attributes(stat.S_IFREG | 0o644, 0, 0, 10**9))
    table.remember(node)
    table.remember(node)
    inode = node.inode
    del node
    table.pack_idle()
    table.forget(inode, 1)
    assert [n.inode for n in table.nodes()] == [1]  # still packed, counted down
    assert table.get(inode).lookups == 1
    table.pack_idle()
    table.forget(inode, 1)
    assert table.at("f") is None and len(table) == 1
    with pytest.raises(NotFound):
        table.get(inode)


_PATHS = ["a", "a/b", "a/c", "d", "d/e", "f"]
_ATTRS = [Attributes(stat.S_IFREG | 0o644, 0, 0, 10**9),
          Attributes(stat.S_IFREG | 0o600, 7, 8, 5 * 10**9 + 1, 3, 4),
          Attributes(stat.S_IFDIR | 0o755, 0, 0, 10**9),
          Attributes(stat.S_IFLNK | 0o777, 2**32 - 2, 0, -1, rdev=2**64 - 1),
          Attributes(stat.S_IFREG | 0o644, 0, 0, 2**63 - 1),
          Attributes(stat.S_IFREG | 0o644, 0, 0, 10**9, xattrs={"user.a": b"1"})]
_FIELDS = {"size": [0, 1, 2**62], "last_modified": [None, 1.5, 1e9 + 0.25],
           "etag": ["", '"d41d8cd98f00b204e9800998ecf8427e"', '"abc-2"'],
           "meta_known": [False, True], "settled": [False, True],
           "symlink_target": [None, "t"], "handles": [0, 1]}


def _step(data: st.DataObject, packing: InodeTable, plain: InodeTable,
          held: list[tuple[Node, Node]]) -> None:
    """One operation on both tables (a function: no node stays held by its locals)."""
    op = data.draw(st.sampled_from(["put", "set", "remember", "forget", "detach", "move",
                                    "hold", "let go"]))
    path = data.draw(st.sampled_from(_PATHS))
    nodes = packing.at(path), plain.at(path)
    if op == "put":
        attrs = data.draw(st.sampled_from(_ATTRS))
        packing.put(path, attrs), plain.put(path, attrs)
    elif op == "set" and nodes[1] is not None:
        name = data.draw(st.sampled_from(sorted(_FIELDS)))
        value = data.draw(st.sampled_from(_FIELDS[name]))
        for node in nodes:
            setattr(node, name, value)
    elif op == "remember" and nodes[1] is not None:
        packing.remember(nodes[0]), plain.remember(nodes[1])
    elif op == "forget":
        inode, count = data.draw(st.integers(1, plain._next)), data.draw(st.integers(1, 2))
        packing.forget(inode, count), plain.forget(inode, count)
    elif op == "detach":
        packing.detach(path), plain.detach(path)
    elif op == "move":
        new = data.draw(st.sampled_from(["g", "h", "a/z"]))
        if not new.startswith(path + "/"):
            packing.move(path, new), plain.move(path, new)
    elif op == "hold" and nodes[1] is not None:
        held.append(nodes)  # type: ignore[arg-type]
    elif op == "let go" and held:
        held.pop(data.draw(st.integers(0, len(held) - 1)))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_packing_is_invisible_to_any_sequence_of_table_operations(data: st.DataObject) -> None:
    """Differential: one table packs idle nodes after every step, the other never does;
    what any node reads is the same in both, and a node kept is the table's object."""
    root = Attributes(stat.S_IFDIR | 0o755, 0, 0, 10**9)
    packing, plain = InodeTable(root), InodeTable(root)
    held: list[tuple[Node, Node]] = []  # (in packing, in plain)
    for _ in range(data.draw(st.integers(1, 40))):
        _step(data, packing, plain, held)
        packing.pack_idle()
        assert len(packing) == len(plain)
        for inode in range(1, plain._next):
            try:
                expected = _node_state(plain.get(inode))
            except NotFound:
                with pytest.raises(NotFound):
                    packing.get(inode)
                continue
            assert _node_state(packing.get(inode)) == expected
        for path in _PATHS + ["g", "h", "a/z"]:
            mine, theirs = packing.at(path), plain.at(path)
            assert (mine and mine.inode) == (theirs and theirs.inode)
        for mine, theirs in held:
            assert _node_state(mine) == _node_state(theirs)
            assert packing._by_inode.get(mine.inode) in (mine, None)
        del mine, theirs
