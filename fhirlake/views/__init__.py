"""SQL-on-FHIR v2 ViewDefinitions: validate, compile once, turn resources into typed rows.

    view = compile_view(definition)        # ViewDefinitionError(message, path="select[0].column[2].path")
    view.schema                            # pyarrow.Schema from the declared column types (never from data)
    view.rows(resources)                   # row dicts, in column order
    view.to_arrow(resources)               # pyarrow.RecordBatch iterator
    view.evaluate_ndjson(lines)            # from raw NDJSON bytes (fast path)
    write_rows(batches, "csv" | "ndjson" | "json" | "parquet", out)

Column types (FHIR -> Arrow; a column without ``type`` gets the type of its path in the R4 structure
model, or ``string`` where the path's type cannot be known from the definition alone):

- string, code, id, uri, url, canonical, oid, uuid, markdown, base64Binary, xhtml -> string
- boolean -> bool; integer, positiveInt, unsignedInt -> int32; integer64 -> int64
- decimal -> string holding the decimal's exact text. FHIR decimals carry their precision in their
  text ("1.50" is not "1.5"), which no float or fixed-scale Arrow decimal keeps, so the text is kept:
  from NDJSON bytes the text is exactly as written in the resource (both back ends; "1e2" stays
  "1e2"); from already-parsed dicts it is the text of the Decimal (exact) or, for a float, Python's
  shortest round-trip repr (so pass dicts parsed with ``views.ndjson.parse_line`` to keep it exact). Computed values
  (``a + b``) are the text of the exact decimal result. JSON and NDJSON output write them back as
  JSON numbers with that text. (When a view knows the precision it may cast the column itself.)
- date, dateTime, instant, time -> string, the ISO text exactly as given in the resource; values the
  view computes (lowBoundary(), highBoundary()) in FHIRPath's full-precision ISO form
  (``2010-10-10T00:00:00.000+14:00``).
- collection: true -> list<the type above>; a column that is not a collection but gets more than
  one value is an error at run time (ViewDefinitionError naming the column).

Every Arrow field carries metadata ``fhir_type`` (and ``description`` when given).

Back ends: ``evaluate_ndjson`` runs the vectorized back end (``fast.py``) when the view is in its
subset and the closures (``closures.py``) otherwise; both give identical rows.

Keys: ``getResourceKey()`` is the resource's id; ``getReferenceKey([Type])`` is the id a reference
points to (relative, absolute, versioned or urn:uuid references), empty when the type does not match.
"""

from .compiler import DEFAULT_BATCH_SIZE, CompiledView, ResolvedColumn, compile_view
from .errors import ViewDefinitionError
from .writers import FORMATS, write_rows

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "FORMATS",
    "CompiledView",
    "ResolvedColumn",
    "ViewDefinitionError",
    "compile_view",
    "write_rows",
]
