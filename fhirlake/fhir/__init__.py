"""FHIR R4 models, formats and definitions (pure, no I/O)."""
