"""Bulk Data $export: parameters, selection, snapshot streaming to files, manifest."""
