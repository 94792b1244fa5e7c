"""Build one generation of a materialized view: evaluate resources into Parquet parts that carry
row-aligned resource keys, and carry unchanged rows over from the previous generation.

Rows are tied to the resource they came from by evaluating a *keyed* copy of the view: the same
definition with one more top-level select, ``getResourceKey()``. Top-level selects are
cross-joined and that select yields exactly one value per resource, so the keyed view yields the
same rows in the same order, plus the key. The rows go to ``data/`` with the view's own schema.
When the view has a key column of its own (``KeyedView.key_column``), that column is the part's
keys; otherwise the keys go to ``keys/``, one key file per part.
"""

from __future__ import annotations

import copy
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .catalog import compiled
from .compiler import DEFAULT_BATCH_SIZE, CompiledView
from .errors import ViewDefinitionError
from .lake import DATA, KEYS, Part, ViewLake, ViewMetadata
from .ndjson import parse_line
from .parts import (
    drop_stale_dictionaries,
    key_file_name,
    read_data_for_rewrite,
    read_key_column,
    read_keys,
    write_data,
    write_keys,
)

KEY_COLUMN = "fhirlake_resource_key"
PART_ROWS = 131_072  # rows per part file (one row group each)
MAX_PARTS = 64  # more parts than this after an incremental refresh: merge them

Deidentify = Callable[[dict], dict | None]


def keyed_definition(definition: dict) -> dict:
    """The definition with a leading top-level select yielding the resource key."""
    keyed = copy.deepcopy(definition)
    selects = keyed.get("select")
    if not isinstance(selects, list):
        return keyed  # compile_view will reject it with a precise error
    keyed["select"] = [{"column": [{"name": KEY_COLUMN, "path": "getResourceKey()", "type": "string"}]}, *selects]
    return keyed


def own_key_column(definition: dict, schema: pa.Schema) -> str | None:
    """A column holding every row's resource key: ``getResourceKey()`` in a top-level select that
    iterates over nothing (its columns are evaluated once per resource, on the resource)."""
    for select in definition.get("select") or ():
        if not isinstance(select, dict) or any(k in select for k in ("forEach", "forEachOrNull", "repeat")):
            continue
        for column in select.get("column") or ():
            name = column.get("name")
            if (str(column.get("path", "")).replace(" ", "") == "getResourceKey()" and not column.get("collection")
                    and name in schema.names and schema.field(name).type == pa.string()):
                return name
    return None


class KeyedView:
    """A compiled view and its keyed twin; evaluates to (keys, rows) batch pairs."""

    def __init__(self, definition: dict) -> None:
        self.view: CompiledView = compiled(definition)
        if KEY_COLUMN in self.view.column_names:
            raise ViewDefinitionError(f"the column name {KEY_COLUMN!r} is reserved by the lake", "select")
        self.keyed: CompiledView = compiled(keyed_definition(definition))
        self.schema: pa.Schema = self.view.schema
        self.key_column: str | None = own_key_column(definition, self.schema)

    @property
    def resource_type(self) -> str:
        return self.view.resource_type

    def _split(self, batch: pa.RecordBatch) -> tuple[pa.Array, pa.RecordBatch]:
        return batch.column(0), pa.RecordBatch.from_arrays(batch.columns[1:], schema=self.schema)

    def evaluate_lines(self, lines: Iterable[bytes], batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[tuple[pa.Array, pa.RecordBatch]]:
        """From raw NDJSON lines of this view's resource type (the vectorized back end when possible)."""
        for batch in self.keyed.evaluate_ndjson(lines, batch_size=batch_size):
            yield self._split(batch)

    def evaluate_deidentified(self, lines: Iterable[bytes], deidentify: Deidentify,
                              batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[tuple[pa.Array, pa.RecordBatch]]:
        """Rows of the de-identified resources, keyed by the ORIGINAL resource id (what changes track)."""
        keys: list[str] = []
        rows: list[tuple] = []
        for line in lines:
            resource = parse_line(line)
            original_key = resource.get("id")
            cleaned = deidentify(resource)
            if cleaned is None:
                continue  # the de-identifier could not process it: nothing of it is published
            for row in self.view.row_tuples([cleaned]):
                keys.append(original_key)
                rows.append(row)
            if len(rows) >= batch_size:
                yield pa.array(keys, pa.string()), self.view.batch_from_tuples(rows)
                keys, rows = [], []
        if rows:
            yield pa.array(keys, pa.string()), self.view.batch_from_tuples(rows)


class GenerationBuilder:
    """Writes one new generation of a view; ``publish()`` makes it current, ``abort()`` drops it.

    New rows are buffered until a part is full and written as one row group (see ``parts``).
    ``key_column``: the view's column that holds each row's resource key; None writes key files.
    """

    def __init__(self, lake: ViewLake, name: str, schema: pa.Schema, key_column: str | None = None) -> None:
        self.lake = lake
        self.name = name
        self.schema = schema
        self.key_column = key_column
        self.dir: Path = lake.new_generation(name)
        self.parts: list[Part] = []
        self._parts_lock = threading.Lock()  # carry_over may run on another thread than add()
        self._pending: list[pa.RecordBatch] = []
        self._pending_keys: list[pa.Array] = []
        self._pending_rows = 0

    @property
    def row_count(self) -> int:
        return sum(p.rows for p in self.parts) + self._pending_rows

    # -------------------------------------------------------------- new rows

    def add(self, keys: pa.Array, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if len(keys) != batch.num_rows:
            raise ValueError(f"{len(keys)} keys for {batch.num_rows} rows")
        self._pending.append(batch)
        self._pending_keys.append(keys)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= PART_ROWS:
            self._close_part()

    def _close_part(self, allow_empty: bool = False) -> None:
        if not self._pending and not allow_empty:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        keys = pa.concat_arrays(self._pending_keys) if self._pending_keys else pa.array([], pa.string())
        self._write_part(table, keys)
        self._pending, self._pending_keys, self._pending_rows = [], [], 0

    def _write_part(self, table: pa.Table, keys: pa.Array | pa.ChunkedArray) -> Part:
        file = f"part-{uuid.uuid4().hex[:12]}.parquet"
        write_data(table, self.dir / DATA / file, self.schema)
        if self.key_column is None:
            write_keys(keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys,
                       self.dir / KEYS / key_file_name(file))
        part = Part(file, table.num_rows, (self.dir / DATA / file).stat().st_size)
        with self._parts_lock:
            self.parts.append(part)
        return part

    # -------------------------------------------------------------- rows kept from the previous generation

    def carry_over(self, previous_dir: Path, parts: list[Part], removed_keys: pa.Array) -> int:
        """Keep every row of the previous generation whose resource key is not in ``removed_keys``.

        A part without a removed key is hard-linked (no copy, no rewrite); the others are filtered
        and rewritten, one after the other (the refresh runs several views' carry-overs at once).
        Returns the number of rows dropped.
        """
        kept = [self._carry_part(previous_dir, part, removed_keys) for part in parts if part.rows]
        carried = [new_part for new_part, _ in kept if new_part is not None]
        with self._parts_lock:
            self.parts[0:0] = carried  # old rows first, as a full rebuild would order them
        return sum(hits for _, hits in kept)

    def _keys(self, generation_dir: Path, part: Part) -> pa.Array:
        if self.key_column is not None:
            return read_key_column(generation_dir / DATA / part.file, self.key_column)
        return read_keys(generation_dir / KEYS / key_file_name(part.file)).combine_chunks()

    def _carry_part(self, previous_dir: Path, part: Part, removed_keys: pa.Array) -> tuple[Part | None, int]:
        keys = self._keys(previous_dir, part)
        hit = pc.is_in(keys, value_set=removed_keys)
        hits = pc.sum(hit).as_py() or 0
        if hits == 0:
            os.link(previous_dir / DATA / part.file, self.dir / DATA / part.file)
            if self.key_column is None:
                os.link(previous_dir / KEYS / key_file_name(part.file), self.dir / KEYS / key_file_name(part.file))
            return Part(part.file, part.rows, part.bytes), 0
        if hits == part.rows:
            return None, hits
        keep = pc.invert(hit)
        # the key column was read already: the other columns only
        data, encoded = read_data_for_rewrite(previous_dir / DATA / part.file, self.schema, skip=self.key_column)
        data = data.filter(keep)
        if self.key_column is not None:
            index = self.schema.get_field_index(self.key_column)
            data = data.add_column(index, self.schema.field(index), keys.filter(keep))
        data = drop_stale_dictionaries(data)
        file = f"part-{uuid.uuid4().hex[:12]}.parquet"
        write_data(data, self.dir / DATA / file, self.schema, dictionary=encoded)  # the encodings stay
        if self.key_column is None:
            write_keys(keys.filter(keep), self.dir / KEYS / key_file_name(file))
        return Part(file, data.num_rows, (self.dir / DATA / file).stat().st_size), hits

    def compact_if_fragmented(self, max_parts: int | None = None) -> bool:
        """Merge the parts into full-size ones once incremental refreshes have left too many."""
        self._close_part()
        if len(self.parts) <= (MAX_PARTS if max_parts is None else max_parts):
            return False
        old, self.parts = self.parts, []
        for part in old:
            data = pq.read_table(self.dir / DATA / part.file, schema=self.schema)
            keys = self._keys(self.dir, part)
            (self.dir / DATA / part.file).unlink()
            (self.dir / KEYS / key_file_name(part.file)).unlink(missing_ok=True)
            offset = 0
            for batch in data.to_batches():
                self.add(keys.slice(offset, batch.num_rows), batch)
                offset += batch.num_rows
        self._close_part()
        return True

    # -------------------------------------------------------------- finish

    def finish(self) -> None:
        # an empty view still publishes one file: readers get its schema
        self._close_part(allow_empty=not self.parts)

    def publish(self, meta: ViewMetadata) -> ViewMetadata:
        self.finish()
        meta.parts = list(self.parts)
        meta.key_column = self.key_column
        meta.row_count = sum(p.rows for p in self.parts)
        meta.generation = self.dir.name
        self.lake.publish(self.name, self.dir, meta)
        return meta

    def abort(self) -> None:
        self._pending, self._pending_keys, self._pending_rows = [], [], 0
        self.lake.discard(self.dir)
