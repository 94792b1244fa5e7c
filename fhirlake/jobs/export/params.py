"""Bulk Data kick-off parameters -> a validated :class:`ExportRequest` (stored as the job's params).

Parameters (Bulk Data Access IG v2.0.0, plus the extensions documented in docs/decisions.md):
- ``_outputFormat``: ``application/fhir+ndjson`` (also ``application/ndjson``, ``ndjson``) or
  ``application/vnd.apache.parquet`` (``parquet``): one Parquet file per type.
- ``_since`` / ``_until``: instants; a resource is included when ``since <= meta.lastUpdated <= until``.
- ``_type``: comma-separated resource types. ``_typeFilter``: ``Type?search``; several per type OR.
- ``_elements``: ``element`` or ``Type.element``; the output is tagged SUBSETTED.
- ``patient`` (Patient/Group level): references ``Patient/<id>`` limiting the patients exported.
- ``includeAssociatedData``: ``_referenced`` (our custom value, prefixed with ``_`` as the IG asks)
  adds the Medication, Practitioner, PractitionerRole, Organization and Location resources that
  the exported compartment resources reference. ``LatestProvenanceResources`` and
  ``RelevantProvenanceResources`` are refused (400), or ignored under ``Prefer: handling=lenient``.
- ``outputCompression=gzip``: write ``.ndjson.gz`` files (served with ``Content-Encoding: gzip``).
- ``_deidentify=<profile>`` (also accepted as ``_anonymizationConfig``): de-identify every exported
  resource with a shipped profile (``safe-harbor``, ``limited-data-set``); see docs/deid.md. Only the
  profile name is stored; keys come from the worker's environment.
Unknown parameters answer 400 unless the request says ``Prefer: handling=lenient``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from fhirlake.fhir import structure
from fhirlake.fhir.outcome import FhirError
from fhirlake.jobs.export.deid import DEID_PARAMETERS, parse_profile

NDJSON = "application/fhir+ndjson"
PARQUET = "application/vnd.apache.parquet"
_FORMATS = {
    "application/fhir+ndjson": NDJSON,
    "application/ndjson": NDJSON,
    "ndjson": NDJSON,
    PARQUET: PARQUET,
    "parquet": PARQUET,
}
REFERENCED_VALUE = "_referenced"
REFERENCED_TYPES = ("Medication", "Practitioner", "PractitionerRole", "Organization", "Location")
_PROVENANCE_VALUES = {"LatestProvenanceResources", "RelevantProvenanceResources"}
KNOWN = {"_outputFormat", "_since", "_until", "_type", "_typeFilter", "_elements", "patient",
         "includeAssociatedData", "outputCompression", *DEID_PARAMETERS}


@dataclass
class ExportRequest:
    level: str  # system | patient | group
    request_url: str
    base_url: str
    group_id: str | None = None
    output_format: str = NDJSON
    since: str | None = None  # ISO instants (UTC)
    until: str | None = None
    types: list[str] | None = None
    type_filters: dict[str, list[str]] = field(default_factory=dict)
    elements: dict[str, list[str]] = field(default_factory=dict)  # type or "*" -> element names
    patients: list[str] | None = None
    include_referenced: bool = False
    gzip: bool = False
    access_filters: dict[str, list[str]] = field(default_factory=dict)  # from auth scopes, per type
    deidentify: str | None = None  # de-identification profile name (never a key)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ExportRequest:
        return cls(**data)

    def since_dt(self) -> datetime | None:
        return datetime.fromisoformat(self.since) if self.since else None

    def until_dt(self) -> datetime | None:
        return datetime.fromisoformat(self.until) if self.until else None


class _Problems:
    def __init__(self, lenient: bool) -> None:
        self.lenient = lenient

    def fail(self, message: str, param: str, code: str = "invalid") -> None:
        """Refuse the request, or drop the parameter under lenient handling."""
        if not self.lenient:
            raise FhirError(400, message, code=code, expression=[param])


def parameters_from_body(body: object) -> list[tuple[str, str]]:
    """A POSTed Parameters resource -> (name, value) pairs (patient references included)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, "A POST kick-off takes a Parameters resource", code="invalid")
    out: list[tuple[str, str]] = []
    for param in body.get("parameter") or []:
        if not isinstance(param, dict) or "name" not in param:
            raise FhirError(400, "Each Parameters.parameter needs a name", code="required")
        name = param["name"]
        value = None
        for key, v in param.items():
            if key.startswith("value"):
                value = v.get("reference") if isinstance(v, dict) else v
        if value is None:
            raise FhirError(400, f"Parameter '{name}' has no value", code="required", expression=[name])
        out.append((name, str(value)))
    return out


def _instant(value: str, name: str) -> str:
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FhirError(400, f"{name} must be a FHIR instant like 2024-01-31T12:00:00Z, not '{value}'",
                        code="invalid", expression=[name]) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def parse_export(params: Sequence[tuple[str, str]], *, level: str, request_url: str, base_url: str,
                 group_id: str | None = None, lenient: bool = False) -> ExportRequest:
    p = _Problems(lenient)
    req = ExportRequest(level=level, request_url=request_url, base_url=base_url, group_id=group_id)
    for name, value in params:
        if name not in KNOWN:
            p.fail(f"The parameter '{name}' is not supported by $export", name, code="not-supported")
        elif name == "_outputFormat":
            fmt = _FORMATS.get(value.strip().lower()) or _FORMATS.get(value.strip())
            if fmt is None:
                raise FhirError(400, f"_outputFormat '{value}' is not supported (use {NDJSON} or {PARQUET})",
                                code="not-supported", expression=[name])
            req.output_format = fmt
        elif name == "_since":
            req.since = _instant(value, name)
        elif name == "_until":
            req.until = _instant(value, name)
        elif name == "_type":
            for t in (t.strip() for t in value.split(",")):
                if not t:
                    continue
                if not structure.is_resource_type(t):
                    p.fail(f"_type names an unknown resource type '{t}'", name)
                    continue
                req.types = req.types or []
                if t not in req.types:
                    req.types.append(t)
        elif name == "_typeFilter":
            _type_filter(req, value, p)
        elif name == "_elements":
            for item in (e.strip() for e in value.split(",")):
                if not item:
                    continue
                res_type, dot, element = item.partition(".")
                if dot and not structure.is_resource_type(res_type):
                    p.fail(f"_elements names an unknown resource type in '{item}'", name)
                    continue
                key, element = (res_type, element) if dot else ("*", item)
                req.elements.setdefault(key, []).append(element)
        elif name == "patient":
            if level == "system":
                p.fail("The patient parameter applies to Patient and Group level exports only", name)
                continue
            for ref in (r.strip() for r in value.split(",")):
                if not ref.startswith("Patient/") or len(ref) <= len("Patient/"):
                    raise FhirError(400, f"patient must be a reference like Patient/123, not '{ref}'",
                                    code="invalid", expression=[name])
                req.patients = [*(req.patients or []), ref.split("/", 1)[1]]
        elif name == "includeAssociatedData":
            for item in (v.strip() for v in value.split(",")):
                if item == REFERENCED_VALUE:
                    req.include_referenced = True
                elif item in _PROVENANCE_VALUES:
                    p.fail(f"includeAssociatedData={item} is not supported: this server keeps no Provenance"
                           f" selection; supported: {REFERENCED_VALUE}", name, code="not-supported")
                elif item:
                    p.fail(f"includeAssociatedData value '{item}' is not supported (supported: {REFERENCED_VALUE})",
                           name, code="not-supported")
        elif name in DEID_PARAMETERS:
            profile = parse_profile(name, value)
            if req.deidentify is not None and req.deidentify != profile:
                raise FhirError(400, f"Two different de-identification profiles were asked for: "
                                f"'{req.deidentify}' and '{profile}'", code="invalid", expression=[name])
            req.deidentify = profile
        elif name == "outputCompression":
            if value.strip().lower() != "gzip":
                p.fail("outputCompression supports only 'gzip'", name)
            else:
                req.gzip = True
    if req.include_referenced and level == "system":
        p.fail(f"includeAssociatedData={REFERENCED_VALUE} applies to Patient and Group level exports", "includeAssociatedData")
        req.include_referenced = False
    if req.since and req.until and req.since > req.until:
        raise FhirError(400, "_since is later than _until", code="invalid", expression=["_since"])
    if req.types and req.type_filters:
        stray = [t for t in req.type_filters if t not in req.types]
        for t in stray:
            p.fail(f"_typeFilter for {t}, which _type does not list", "_typeFilter")
            req.type_filters.pop(t)
    return req


def _type_filter(req: ExportRequest, value: str, p: _Problems) -> None:
    from fhirlake.search.registry import registry

    res_type, mark, query = value.partition("?")
    if not mark or not structure.is_resource_type(res_type) or not query:
        p.fail(f"_typeFilter must look like Type?param=value, not '{value}'", "_typeFilter")
        return
    reg = registry()
    for pname, _v in parse_qsl(query, keep_blank_values=True):
        code = pname.split(":", 1)[0].split(".", 1)[0]
        if code in ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_has") or reg.get(res_type, code):
            continue
        p.fail(f"_typeFilter '{value}': {res_type} has no search parameter '{code}'", "_typeFilter")
        return
    req.type_filters.setdefault(res_type, []).append(query)
