"""FHIR semantics, one module per group of interactions. No HTTP here; no SQL beyond the store."""
