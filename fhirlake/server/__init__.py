"""Process management: the private PostgreSQL cluster and the serving processes."""
