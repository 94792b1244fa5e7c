"""Run the WSGI app under gunicorn (gthread workers) without a separate config file.

Production can instead run: ``gunicorn -c docker/gunicorn.conf.py 'fhirlake.server.wsgi:app'``.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication


class FhirlakeGunicorn(BaseApplication):
    def __init__(self, app_factory: Any, options: dict[str, Any]) -> None:
        self._factory = app_factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key.lower(), value)

    def load(self) -> Any:
        # Called in each worker after fork: engines and pools are created per process.
        return self._factory()
