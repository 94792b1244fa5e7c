"""Resolve a location (local path or URI such as ``s3://bucket/prefix``) to a pyarrow filesystem."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pyarrow import fs as pafs


@lru_cache(maxsize=16)
def _from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(uri)


def resolve(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    text = str(location)
    if "://" in text:
        return _from_uri(text)
    return pafs.LocalFileSystem(), str(Path(text).resolve())


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def is_local(filesystem: pafs.FileSystem) -> bool:
    return isinstance(filesystem, pafs.LocalFileSystem)


def delete_tree(location: str | Path) -> None:
    """Remove a folder and everything under it; a missing folder is not an error."""
    filesystem, path = resolve(location)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return
    filesystem.delete_dir(path)
