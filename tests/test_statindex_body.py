"""A stat index body encoded entry by entry (fs/statindex.IndexBody) reads back whole."""

from __future__ import annotations

import gzip
import json

import pytest

from s3mpfs.fs.statindex import IndexBody, _decode_entries, decode_index, encode_index


@pytest.mark.parametrize("count", [0, 1, IndexBody.CHUNK, IndexBody.CHUNK * 2 + 3])
def test_an_index_encoded_in_chunks_decodes_to_its_entries(count: int) -> None:
    entries = {f"f{i} é\"": [f'"{i:032x}"', i, 1.5 + i, 2 + i, {"mode": "33188"}]
               for i in range(count)}
    assert decode_index(encode_index("d/ü", entries), "d/ü") == entries
    text = gzip.decompress(encode_index("d/ü", entries)).decode()
    assert _decode_entries(text, "d/ü") == entries  # read one entry at a time
    assert decode_index(encode_index("d/ü", entries), "d") == {}  # another directory's


def test_an_index_in_another_json_form_or_with_bad_entries_reads_what_is_valid() -> None:
    good = ['"abc"', 1, 2.5, 2, {"mode": "33188"}]
    document = {"version": 1, "directory": "d",
                "entries": {"a": good, "b": [1, 2], "c": good + [0], "d": good}}
    spaced = gzip.compress(json.dumps(document).encode())  # (", " and ": ")
    assert decode_index(spaced, "d") == {"a": good, "d": good}
    compact = gzip.compress(json.dumps(document, separators=(",", ":")).encode())
    assert decode_index(compact, "d") == {"a": good, "d": good}
    assert decode_index(compact[:-9], "d") == {}  # damaged
    assert decode_index(b"not gzip", "d") == {}
