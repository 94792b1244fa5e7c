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
