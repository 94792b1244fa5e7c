"""Production gunicorn settings for the fhirlake API.

gthread workers: a sync worker's timeout kills long streams (bulk downloads, $everything);
threads share one SQLAlchemy pool per process. Tune workers to cores, threads to concurrency.
"""

import multiprocessing
import os

bind = os.environ.get("FHIRLAKE_BIND", "0.0.0.0:8080")
worker_class = "gthread"
workers = int(os.environ.get("FHIRLAKE_GUNICORN_WORKERS", multiprocessing.cpu_count()))
threads = int(os.environ.get("FHIRLAKE_GUNICORN_THREADS", 8))
timeout = 120
graceful_timeout = 30
keepalive = 5
accesslog = None  # access lines would carry query strings (PHI); the audit trail records accesses
errorlog = "-"
loglevel = "warning"


def on_starting(server) -> None:  # noqa: ANN001 - gunicorn hook
    """Security by default: never expose an unauthenticated API beyond loopback."""
    from fhirlake.config import load_settings
    from fhirlake.server.security_check import check_bind

    settings = load_settings()
    for address in server.cfg.bind:
        host = address.rsplit(":", 1)[0] if ":" in address else address
        problem = check_bind(settings.with_overrides(host=host.strip("[]")))
        if problem:
            raise SystemExit(problem)
