"""De-identification of FHIR R4 resources (pure: no database, no HTTP).

    from fhirlake.deid import load_profile, Deidentifier, DeidKeys
    engine = Deidentifier(load_profile("safe-harbor"), DeidKeys.from_env())
    out = engine.deidentify(resource)              # new dict, or None / DeidProcessingError
    for line in engine.deidentify_ndjson(lines, on_error=report): ...

Configurations use the Microsoft FHIR anonymizer's shape; see docs/deid.md.
"""

from fhirlake.deid.config import DeidConfig, Parameters, Rule, load_config, load_profile, parse_config
from fhirlake.deid.engine import SECURITY_LABELS, Deidentifier
from fhirlake.deid.errors import DeidConfigError, DeidError, DeidInputError, DeidProcessingError
from fhirlake.deid.keys import DeidKeys
from fhirlake.deid.methods import decrypt

__all__ = [
    "SECURITY_LABELS", "DeidConfig", "DeidConfigError", "DeidError", "DeidInputError", "DeidKeys",
    "DeidProcessingError", "Deidentifier", "Parameters", "Rule", "decrypt", "load_config", "load_profile",
    "parse_config",
]
