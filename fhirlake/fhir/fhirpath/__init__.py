"""FHIRPath (N1) for FHIR R4: one parser, compiled to Python closures."""

from fhirlake.fhir.fhirpath.errors import FhirPathError, FhirPathSyntaxError
from fhirlake.fhir.fhirpath.parser import parse
from fhirlake.fhir.fhirpath.values import FhirDate, FhirDateTime, FhirTime, Quantity

__all__ = ["FhirDate", "FhirDateTime", "FhirPathError", "FhirPathSyntaxError", "FhirTime", "Quantity", "parse"]
