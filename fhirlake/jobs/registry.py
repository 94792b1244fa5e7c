"""Job kinds and their handlers, and periodic tasks the scheduler can trigger.

A subsystem makes its work durable by registering a handler for a job kind::

    from fhirlake.jobs.registry import job_handler

    @job_handler("view-refresh")
    def refresh(ctx: JobContext) -> dict: ...

Modules that register handlers are imported by workers from :data:`HANDLER_MODULES` (missing ones
are skipped, so a subsystem can be absent) and from ``handler_modules`` in the schedule file.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhirlake.jobs.worker import JobContext

log = logging.getLogger("fhirlake.jobs")

Handler = Callable[["JobContext"], dict[str, Any]]
_HANDLERS: dict[str, Handler] = {}

HANDLER_MODULES = (
    "fhirlake.jobs.export.runner",
    "fhirlake.jobs.imports.runner",
    "fhirlake.jobs.retention",
    "fhirlake.views.jobs",  # view refresh (issue of the views engineer), when present
)


def job_handler(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS[kind] = fn
        return fn

    return register


def handler_for(kind: str) -> Handler | None:
    return _HANDLERS.get(kind)


def known_kinds() -> list[str]:
    return sorted(_HANDLERS)


def load_handlers(extra_modules: Iterable[str] = ()) -> list[str]:
    """Import every handler module that exists; return the kinds now registered."""
    for name in (*HANDLER_MODULES, *extra_modules):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                log.debug("job handler module %s is not installed", name)
                continue
            raise
    return known_kinds()
