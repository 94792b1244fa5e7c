"""Where materialized views live on disk, and how a refresh is published atomically.

Layout of one zone (``<lake>/views`` or ``<lake>/deid/<profile>/views``)::

    <root>/<name>                      symlink -> _store/<name>/current/data   (what readers open)
    <root>/_store/<name>/current       symlink -> <generation>                 (switched by rename)
    <root>/_store/<name>/<generation>/
        data/part-*.parquet            the view's rows, exactly the view's schema (nothing else, so
                                       ``polars.read_parquet(<root>/<name>)`` and DuckDB read it as is)
        keys/part-*.arrow              row-aligned resource keys of each data part (upserts, deletes)
        view.json                      metadata: watermark, row count, refreshed-at, definition hash

A refresh writes a complete new generation, then replaces the ``current`` symlink with one
``rename``: a reader sees the old generation or the new one, never a mix. The generation before
the current one is kept, and so is any generation younger than ``GRACE_SECONDS`` (a reader that
resolved it may still be opening its files); older ones are removed. Unchanged
part files are hard links, so an incremental generation costs only what changed.

Local filesystems only (symlinks and hard links); an object-store lake would switch a manifest.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from .parts import key_file_name

STORE = "_store"
CURRENT = "current"
METADATA = "view.json"
DATA = "data"
KEYS = "keys"
GRACE_SECONDS = 300.0
# Version of the part format (see ``parts``); a generation written in another one is rebuilt in full.
LAYOUT = 3


@dataclass
class Part:
    file: str  # file name, the same under data/ and keys/
    rows: int
    bytes: int | None = None  # size of the data file as written (None: recorded before sizes were)


@dataclass
class ViewMetadata:
    name: str
    zone: str
    resource_type: str
    definition_hash: str
    watermark: str | None  # the store snapshot (pg_snapshot text) this generation reflects
    row_count: int
    refreshed_at: str  # ISO instant
    generation: str
    previous_generation: str | None = None
    mode: str = "full"  # how this generation was made: full | incremental
    parts: list[Part] = field(default_factory=list)
    layout: int = LAYOUT
    key_column: str | None = None  # the column holding the rows' resource keys; None: key files

    @property
    def data_bytes(self) -> int:
        """Size of the generation's data files as written: what rewriting it costs (row counts
        mislead, rows differ in width several times over between views)."""
        return sum(p.bytes or 0 for p in self.parts)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, raw: bytes) -> ViewMetadata:
        data = orjson.loads(raw)
        data["parts"] = [Part(**p) for p in data.get("parts", [])]
        data.setdefault("layout", 1)  # written before the layout was recorded
        return cls(**data)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically (a fresh symlink renamed over the old one)."""
    temp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}.tmp")
    os.symlink(target, temp)
    os.replace(temp, link)


class ViewLake:
    """One zone of materialized views under ``root``."""

    def __init__(self, root: Path, zone: str = "lake") -> None:
        self.root = Path(root)
        self.zone = zone

    @classmethod
    def for_zone(cls, lake_dir: Path, deid_profile: str | None = None) -> ViewLake:
        if deid_profile:
            return cls(Path(lake_dir) / "deid" / deid_profile / "views", zone=deid_profile)
        return cls(Path(lake_dir) / "views", zone="lake")

    def view_dir(self, name: str) -> Path:
        """The folder readers open: the current generation's Parquet files."""
        return self.root / name

    def _store(self, name: str) -> Path:
        return self.root / STORE / name

    def current_dir(self, name: str) -> Path | None:
        link = self._store(name) / CURRENT
        return link.resolve() if link.exists() else None

    def metadata(self, name: str) -> ViewMetadata | None:
        current = self.current_dir(name)
        return None if current is None else self._metadata_in(current)

    @staticmethod
    def _metadata_in(generation: Path) -> ViewMetadata | None:
        try:
            return ViewMetadata.from_json((generation / METADATA).read_bytes())
        except FileNotFoundError:
            return None

    def names(self) -> list[str]:
        store = self.root / STORE
        if not store.is_dir():
            return []
        return sorted(p.name for p in store.iterdir() if (p / CURRENT).exists())

    def data_files(self, name: str) -> list[Path]:
        """The current Parquet part files of a view (empty list when not materialized)."""
        # Resolve `current` ONCE: a publish between two resolutions would pair one generation's
        # metadata with another generation's folder.
        current = self.current_dir(name)
        meta = None if current is None else self._metadata_in(current)
        if meta is None or current is None:
            return []
        return [current / DATA / p.file for p in meta.parts]

    def new_generation(self, name: str) -> Path:
        generation = f"g{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:6]}"
        path = self._store(name) / generation
        (path / DATA).mkdir(parents=True)
        (path / KEYS).mkdir()
        return path

    def publish(self, name: str, generation_dir: Path, meta: ViewMetadata) -> None:
        """Write the metadata into the generation, switch ``current`` to it, prune old generations."""
        (generation_dir / METADATA).write_bytes(meta.to_json())
        store = self._store(name)
        _replace_symlink(store / CURRENT, generation_dir.name)
        reader_link = self.view_dir(name)
        target = f"{STORE}/{name}/{CURRENT}/{DATA}"
        if not reader_link.is_symlink() or os.readlink(reader_link) != target:
            _replace_symlink(reader_link, target)
        self._prune(name, keep={generation_dir.name, meta.previous_generation})

    def damaged_parts(self, name: str, meta: ViewMetadata) -> list[str]:
        """Parts of the current generation missing or not of the size they were written with.

        Parts are not fsynced when published (the lake can always be rebuilt from the store, and
        a flush of every rewritten part would cost an incremental refresh more than its own work):
        after an OS crash a recent generation may hold empty or short files. The refresh rebuilds
        such a view in full rather than carry damaged rows over.
        """
        current = self.current_dir(name)
        if current is None:
            return []
        damaged = []
        for part in meta.parts:
            try:
                size = (current / DATA / part.file).stat().st_size
                if meta.key_column is None and (current / KEYS / key_file_name(part.file)).stat().st_size == 0:
                    size = -1
            except OSError:
                size = -1
            if size < 0 or (part.bytes is not None and size != part.bytes):
                damaged.append(part.file)
        return damaged

    def rewrite_metadata(self, name: str, meta: ViewMetadata) -> None:
        """Update the current generation's metadata in place (a refresh that found no change)."""
        current = self.current_dir(name)
        assert current is not None
        temp = current / f".{METADATA}.{uuid.uuid4().hex[:8]}.tmp"
        temp.write_bytes(meta.to_json())
        os.replace(temp, current / METADATA)

    def discard(self, generation_dir: Path) -> None:
        shutil.rmtree(generation_dir, ignore_errors=True)

    def _prune(self, name: str, keep: set[str | None]) -> None:
        too_old = time.time() - GRACE_SECONDS
        for path in self._store(name).iterdir():
            if path.name == CURRENT or path.name in keep or path.name.startswith("."):
                continue
            if path.is_dir() and not path.is_symlink() and path.stat().st_mtime < too_old:
                shutil.rmtree(path, ignore_errors=True)
