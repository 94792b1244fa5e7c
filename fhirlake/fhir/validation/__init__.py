"""Fast structural validation of FHIR R4 JSON resources (compiled from the StructureDefinitions)."""

from fhirlake.fhir.validation.issues import ValidationIssue
from fhirlake.fhir.validation.validator import MAX_DEPTH, validate_resource, warm_up

__all__ = ["MAX_DEPTH", "ValidationIssue", "validate_resource", "warm_up"]
