"""FHIR R4 search: index extraction at write time, typed index tables, SQL planning, Bundles."""
