"""fhirlake: an analytics-oriented FHIR R4 server."""

__version__ = "0.1.0"
