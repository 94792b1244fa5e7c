"""De-identified ``$export``: the profile parameter, the worker's engine, and the per-resource step.

Kick-off (system, ``Patient/$export``, ``Group/<id>/$export``; GET query or POSTed Parameters):
- ``_deidentify=<profile>``, also accepted as ``_anonymizationConfig=<profile>`` (the name another
  server's users know; here it names a shipped profile, not a file): ``safe-harbor`` or
  ``limited-data-set`` (docs/deid.md). Unknown name: 400 OperationOutcome naming it; both names with
  different profiles: 400.
- With authorization on, the token needs the scope ``fhirlake/deid-export`` (interaction
  ``deid-export`` of :class:`fhirlake.auth.context.AccessContext`) on top of the usual export
  scopes: 403 otherwise.
- The API process builds the profile's engine with its own key before queuing: without
  ``FHIRLAKE_DEID_KEY`` / ``FHIRLAKE_DEID_KEY_FILE`` the answer is 400 (``not-supported``) and no job
  is queued. The worker builds it again when the job starts; without a key there the job fails
  ("de-identification is not possible on this worker") before any file is written.
- Only the profile name is stored in the job's params (``ExportRequest.deidentify``): keys never
  come from the request and are never stored or logged.

Output: every resource goes through the profile, then ``_elements`` (so that date offsets and
pseudonyms never depend on the elements asked for). NDJSON (and gzip) reads the same COPY stream as
the plain export; Parquet rows take ``id`` and ``last_updated`` from the de-identified resource
(nullable there, the profile may remove them); ``deleted`` Bundles carry pseudonymous ids. A
resource that cannot be de-identified is never written: the error file holds one OperationOutcome
per failure (``<file>: resource <n> of this file could not be de-identified ...``: no id, no value),
at most 1000 and then one summary. The manifest's ``extension`` (a JSON object, as the Bulk Data IG
asks) is ``{"http://fhirlake.org/fhir/StructureDefinition/deidentification-profile": "<profile>"}``.
Plain exports do not touch this module.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime
from typing import Any

import orjson

from fhirlake.deid import Deidentifier, DeidError, DeidKeys, load_profile
from fhirlake.deid.config import PROFILES
from fhirlake.deid.keys import KEYED_METHODS
from fhirlake.fhir.outcome import FhirError

DEID_PARAMETERS = ("_deidentify", "_anonymizationConfig")
# The manifest's ``extension`` (a JSON object, as the Bulk Data IG asks) carries the profile
# under this key.
MANIFEST_EXTENSION_URL = "http://fhirlake.org/fhir/StructureDefinition/deidentification-profile"
MAX_ERROR_OUTCOMES = 1000  # beyond that, one summary outcome keeps the error file small

_engines: dict[tuple[str, str], Deidentifier] = {}
_engines_lock = threading.Lock()


def parse_profile(name: str, value: str) -> str:
    """A kick-off parameter value -> the profile name; 400 naming it when no such profile ships."""
    profile = value.strip()
    if profile not in PROFILES:
        shown = profile[:64] if profile else "(empty)"
        raise FhirError(400, f"{name}: unknown de-identification profile '{shown}'; available: "
                        f"{', '.join(PROFILES)}", code="not-supported", expression=[name])
    return profile


def export_deidentifier(profile: str) -> Deidentifier:
    """The compiled engine for a profile with this process's key (DeidConfigError without a key).

    Engines are kept per (profile, key fingerprint): their transition tables warm up with use, and
    a changed key never reuses an engine built with the old one.
    """
    keys = DeidKeys.from_env()
    fingerprint = hashlib.sha256(b"".join(keys.key_for(m) for m in KEYED_METHODS)).hexdigest()
    with _engines_lock:
        engine = _engines.get((profile, fingerprint))
        if engine is None:
            if len(_engines) >= 8:
                _engines.clear()
            engine = _engines[(profile, fingerprint)] = Deidentifier(load_profile(profile), keys)
    return engine


def _outcome(message: str) -> dict:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing", "diagnostics": message}]}


class DeidStep:
    """De-identifies the resources of one export file after another and collects the failures."""

    def __init__(self, engine: Deidentifier, profile: str) -> None:
        self.engine = engine
        self.profile = profile
        self.errors: list[dict] = []
        self.failed = 0
        self._file = ""
        self._row = 0

    def begin_file(self, name: str) -> None:
        self._file = name
        self._row = 0

    def resource(self, content: Any) -> dict | None:
        """Stored JSON text (str, bytes or memoryview) -> the de-identified resource, or None."""
        self._row += 1
        try:
            out = self.engine.deidentify(orjson.loads(content))
        except orjson.JSONDecodeError:
            self._fail("stored text is not valid JSON")
            return None
        except DeidError as exc:
            self._fail(str(exc)[:200])
            return None
        if out is None:  # profile policy processingErrors=skip
            self._fail("skipped by the profile's processingErrors policy")
        return out

    def line(self, content: Any) -> bytes | None:
        out = self.resource(content)
        return None if out is None else orjson.dumps(out) + b"\n"

    def resource_id(self, res_type: str, res_id: str) -> str | None:
        """The pseudonym the profile gives ``res_type/res_id`` (None when the profile removes ids)."""
        try:
            out = self.engine.deidentify({"resourceType": res_type, "id": res_id})
        except DeidError:
            return None
        return out.get("id") if out else None

    def _fail(self, reason: str) -> None:
        self.failed += 1
        if len(self.errors) < MAX_ERROR_OUTCOMES:
            self.errors.append(_outcome(
                f"{self._file}: resource {self._row} of this file could not be de-identified and was left out"
                f" ({reason})"))

    def error_outcomes(self) -> list[dict]:
        extra = self.failed - len(self.errors)
        if extra > 0:
            return [*self.errors, _outcome(f"{extra} more resources could not be de-identified and were left out")]
        return list(self.errors)


def instant(value: object) -> datetime | None:
    """meta.lastUpdated of a de-identified resource (shifted, maybe removed) for Parquet."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
