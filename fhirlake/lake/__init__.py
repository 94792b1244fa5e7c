"""Files the jobs produce (bulk export output, import error reports, views), written through pyarrow
filesystems so that a local directory and ``s3://`` behave the same, and published atomically."""
