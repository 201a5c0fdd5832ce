"""A stat index body encoded entry by entry (fs/statindex.IndexBody) reads back whole."""

from __future__ import annotations

import pytest

from s3mpfs.fs.statindex import IndexBody, decode_index, encode_index


@pytest.mark.parametrize("count", [0, 1, IndexBody.CHUNK, IndexBody.CHUNK * 2 + 3])
def test_an_index_encoded_in_chunks_decodes_to_its_entries(count: int) -> None:
    entries = {f"f{i} é\"": [f'"{i:032x}"', i, 1.5 + i, 2 + i, {"mode": "33188"}]
               for i in range(count)}
    assert decode_index(encode_index("d/ü", entries), "d/ü") == entries
    assert decode_index(encode_index("d/ü", entries), "d") == {}  # another directory's
