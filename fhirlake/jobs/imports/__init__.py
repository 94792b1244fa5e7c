"""Bulk import: fhirlake import and POST /$import."""
