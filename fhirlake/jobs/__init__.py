"""Durable long-running work: the ``job`` table, workers, the scheduler, bulk export and import.

The ``job`` table is the only truth (DESIGN.md, "Jobs"). Workers claim rows with
``SELECT ... FOR UPDATE SKIP LOCKED``, heartbeat while they run, and pick up jobs whose worker
stopped heartbeating. Handlers are plain functions registered per job kind
(:mod:`fhirlake.jobs.registry`).
"""
