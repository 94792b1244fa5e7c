"""FHIRPath (N1) for FHIR R4: one parser, compiled to Python closures.

    expr = compile_path("Patient.name.where(use = 'official').given")
    values = expr(resource_dict, {"resource": resource_dict})
"""

from fhirlake.fhir.fhirpath.api import CompiledPath, compile_path
from fhirlake.fhir.fhirpath.compiler import Env
from fhirlake.fhir.fhirpath.errors import FhirPathError, FhirPathSyntaxError
from fhirlake.fhir.fhirpath.model import descendants_of_type
from fhirlake.fhir.fhirpath.parser import parse
from fhirlake.fhir.fhirpath.values import FhirDate, FhirDateTime, FhirTime, Quantity

__all__ = [
    "CompiledPath", "Env", "FhirDate", "FhirDateTime", "FhirPathError", "FhirPathSyntaxError", "FhirTime",
    "Quantity", "compile_path", "descendants_of_type", "parse",
]
