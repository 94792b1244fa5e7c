"""The catalog of ready ViewDefinitions that the lake materializes.

Where it is read from (in this order):
1. ``FHIRLAKE_VIEWS_DIR`` (a folder of ``*.json`` ViewDefinitions), for a site's own catalog;
2. the package copy ``fhirlake/resources/views/`` (installed with the wheel as package data).

The repository's ``views/`` folder (with its README documenting every column) is the source the
package copy is made from; a test keeps the two identical.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import orjson

from .compiler import CompiledView, compile_view
from .errors import ViewDefinitionError

PACKAGE_CATALOG = Path(__file__).resolve().parents[1] / "resources" / "views"
ENV_VIEWS_DIR = "FHIRLAKE_VIEWS_DIR"


def catalog_dir() -> Path:
    configured = os.environ.get(ENV_VIEWS_DIR)
    return Path(configured) if configured else PACKAGE_CATALOG


def definition_hash(definition: dict) -> str:
    """A stable hash of a ViewDefinition's content (key order does not matter)."""
    return hashlib.sha256(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def load_catalog(folder: Path | None = None) -> dict[str, dict]:
    """name -> ViewDefinition of every ``*.json`` file in the catalog folder, sorted by name."""
    folder = folder or catalog_dir()
    if not folder.is_dir():
        raise ViewDefinitionError(f"the view catalog folder {folder} does not exist")
    views: dict[str, dict] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            definition = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ViewDefinitionError(f"{path.name} is not valid JSON: {exc}") from None
        name = definition.get("name") if isinstance(definition, dict) else None
        if not isinstance(name, str) or not name:
            raise ViewDefinitionError(f"{path.name}: a catalog view needs a name", "name")
        if name in views:
            raise ViewDefinitionError(f"{path.name}: two catalog views are named {name!r}", "name")
        views[name] = definition
    return views


@lru_cache(maxsize=64)
def _compiled(text: bytes) -> CompiledView:
    return compile_view(orjson.loads(text))


def compiled(definition: dict) -> CompiledView:
    """Compile once per distinct definition (the scheduler refreshes the same views all day)."""
    return _compiled(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS))


def select_views(names: list[str] | tuple[str, ...] | None, catalog: dict[str, dict] | None = None) -> dict[str, dict]:
    """The named catalog views (all when ``names`` is empty); unknown names are an error."""
    catalog = catalog if catalog is not None else load_catalog()
    if not names:
        return catalog
    unknown = [n for n in names if n not in catalog]
    if unknown:
        raise ViewDefinitionError(
            f"no catalog view named {', '.join(map(repr, unknown))}; known: {', '.join(catalog)}"
        )
    return {n: catalog[n] for n in names}
