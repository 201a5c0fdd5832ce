"""The inode table's nodes (fs/inodes.py): what a node keeps compactly reads back as given."""

from __future__ import annotations

import stat

import pytest

from s3mpfs.fs.inodes import Node
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
    node = Node(2, "f", Attributes(stat.S_IFREG | 0o644, 0, 0, 1.0))
    node.etag = etag
    assert node.etag == etag and type(node.etag) is str
