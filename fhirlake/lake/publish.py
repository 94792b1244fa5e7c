"""Atomic publication: write under a temporary name, then move into place.

A reader never sees half a file. On a local filesystem the move is a rename (atomic on POSIX);
on object stores a PUT is already all-or-nothing and pyarrow's move copies then deletes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyarrow import fs as pafs

from fhirlake.lake.fs import join, resolve

BUFFER_BYTES = 1 << 20


@contextmanager
def atomic_output(folder: str | Path, name: str) -> Iterator[pafs.NativeFile]:
    """Yield a writable stream; the file appears as ``folder/name`` only if the block succeeds."""
    filesystem, base = resolve(folder)
    filesystem.create_dir(base, recursive=True)
    final = join(base, name)
    temp = join(base, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    stream = filesystem.open_output_stream(temp, buffer_size=BUFFER_BYTES)
    try:
        yield stream
        stream.close()
        filesystem.move(temp, final)
    except BaseException:
        if not stream.closed:
            stream.close()
        try:
            filesystem.delete_file(temp)
        except (FileNotFoundError, OSError):
            pass
        raise


def local_path(folder: str | Path, name: str) -> Path | None:
    """The local path of a published file (None when the lake is not on a local filesystem)."""
    filesystem, base = resolve(folder)
    if not isinstance(filesystem, pafs.LocalFileSystem):
        return None
    return Path(join(base, name))
