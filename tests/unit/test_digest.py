"""The one file digest (ragdock/digest.py) every manifest records."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ragdock.digest import sha256_file


def test_it_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    abc = tmp_path / "abc"
    abc.write_bytes(b"abc")
    assert sha256_file(abc) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_file_larger_than_one_read_is_hashed_whole(tmp_path: Path) -> None:
    data = bytes(range(256)) * 12289  # 3 MiB and a bit: several blocks and a partial one
    big = tmp_path / "big"
    big.write_bytes(data)
    assert sha256_file(big) == hashlib.sha256(data).hexdigest()


def test_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "absent")
