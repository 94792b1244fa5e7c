"""``POST /$import`` Parameters -> job params (inputs checked: under ``import_dir`` or http(s))."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from fhirlake.config import Settings
from fhirlake.fhir.outcome import FhirError

INPUT_FORMATS = {"application/fhir+ndjson", "application/ndjson", "ndjson"}


def _value(part: dict) -> str | None:
    for key, value in part.items():
        if key.startswith("value") and isinstance(value, str):
            return value
    return None


def resolve_input(url: str, settings: Settings) -> str:
    """An http(s) URL as is, or an absolute local path that must lie inside ``import_dir``."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return url
    if scheme not in ("", "file"):
        raise FhirError(400, f"input url '{url}': only http(s) URLs and files under the import directory are read",
                        code="not-supported")
    if settings.import_dir is None:
        raise FhirError(400, "This server has no import directory (FHIRLAKE_IMPORT_DIR): file inputs are refused",
                        code="not-supported")
    root = settings.import_dir.resolve()
    raw = unquote(urlsplit(url).path) if scheme == "file" else url
    path = (root / raw).resolve()
    if path != root and root not in path.parents:
        raise FhirError(400, f"input '{url}' lies outside the import directory", code="security")
    if not path.exists():
        raise FhirError(400, f"input '{url}' does not exist in the import directory", code="not-found")
    return str(path)


def parse_import(body: object, settings: Settings, *, lenient: bool = False) -> dict:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, "$import takes a Parameters resource", code="invalid")
    fmt = "application/fhir+ndjson"
    inputs: list[dict] = []
    for param in body.get("parameter") or []:
        name = param.get("name") if isinstance(param, dict) else None
        if name == "inputFormat":
            fmt = _value(param) or ""
            if fmt not in INPUT_FORMATS:
                raise FhirError(400, f"inputFormat '{fmt}' is not supported (use application/fhir+ndjson)",
                                code="not-supported", expression=["inputFormat"])
        elif name == "input":
            parts = {p.get("name"): _value(p) for p in param.get("part") or [] if isinstance(p, dict)}
            url = parts.get("url") or _value(param)
            if not url:
                raise FhirError(400, "Each input needs a url part", code="required", expression=["input"])
            inputs.append({"type": parts.get("type"), "url": url, "location": resolve_input(url, settings)})
        elif name in ("inputSource", "storageDetail", "mode"):
            continue
        elif not lenient:
            raise FhirError(400, f"The parameter '{name}' is not supported by $import", code="not-supported",
                            expression=[str(name)])
    if not inputs:
        raise FhirError(400, "$import needs at least one input", code="required", expression=["input"])
    return {"inputFormat": fmt, "inputs": inputs}


def is_url(location: str) -> bool:
    return urlsplit(location).scheme.lower() in ("http", "https")
