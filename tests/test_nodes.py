"""The inode table's nodes (fs/inodes.py): what a node keeps compactly reads back as given."""

from __future__ import annotations

import stat

import pytest

from s3mpfs.errors import NotFound
from s3mpfs.fs.inodes import InodeTable, Node
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
