"""The `fhirlake` command line."""
