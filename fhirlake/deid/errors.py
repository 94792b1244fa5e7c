"""Errors of the de-identification engine. Messages never contain key material or PHI values."""

from __future__ import annotations


class DeidError(Exception):
    """Base class of every de-identification error."""


class DeidConfigError(DeidError):
    """A configuration, profile or key that cannot be used (raised before any data is touched)."""


class DeidProcessingError(DeidError):
    """A resource that could not be de-identified; it is never passed through."""


class DeidInputError(DeidProcessingError):
    """Input that is not a FHIR resource (not JSON, not an object, unknown resourceType)."""
