"""Settings, read once from environment variables (CLI flags override them).

Every variable is documented in the README's configuration table; keep the two in step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from exc


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _choice(name: str, allowed: tuple[str, ...], default: str) -> str:
    raw = (os.environ.get(name) or default).strip().lower()
    if raw not in allowed:
        raise SystemExit(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    data_dir: Path = Path("fhirlake-data")
    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str | None = None
    max_request_bytes: int = 32 * 1024 * 1024
    default_page_size: int = 50
    max_page_size: int = 1000
    export_max_concurrent: int = 4
    export_file_max_resources: int = 100_000
    export_retention_hours: int = 24
    import_dir: Path | None = None
    view_refresh_minutes: int = 15
    worker_threads: int = 1
    # auth (issue 7): issuer/JWKS of an external authorization server, or the built-in token endpoint
    auth_enabled: bool = False
    auth_issuer: str | None = None
    auth_jwks: str | None = None
    auth_audience: str | None = None
    auth_dev_secret: str | None = None
    # "sync": an access is answered only once its audit record is durable (default);
    # "async": records commit with synchronous_commit=off (a database crash may lose the last ~0.2 s)
    audit_durability: str = "sync"

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def bulk_dir(self) -> Path:
        return self.data_dir / "bulk"

    @property
    def pg_dir(self) -> Path:
        return self.data_dir / "pg"

    def with_overrides(self, **overrides: object) -> Settings:
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **clean)  # type: ignore[arg-type]


def load_settings() -> Settings:
    """Build settings from the environment."""
    env = os.environ.get
    import_dir = env("FHIRLAKE_IMPORT_DIR")
    return Settings(
        database_url=env("FHIRLAKE_DATABASE_URL") or None,
        data_dir=Path(env("FHIRLAKE_DATA_DIR") or "fhirlake-data"),
        host=env("FHIRLAKE_HOST") or "127.0.0.1",
        port=_env_int("FHIRLAKE_PORT", 8080),
        base_url=env("FHIRLAKE_BASE_URL") or None,
        max_request_bytes=_env_int("FHIRLAKE_MAX_REQUEST_BYTES", 32 * 1024 * 1024),
        default_page_size=_env_int("FHIRLAKE_DEFAULT_PAGE_SIZE", 50),
        max_page_size=_env_int("FHIRLAKE_MAX_PAGE_SIZE", 1000),
        export_max_concurrent=_env_int("FHIRLAKE_EXPORT_MAX_CONCURRENT", 4),
        export_file_max_resources=_env_int("FHIRLAKE_EXPORT_FILE_MAX_RESOURCES", 100_000),
        export_retention_hours=_env_int("FHIRLAKE_EXPORT_RETENTION_HOURS", 24),
        import_dir=Path(import_dir) if import_dir else None,
        view_refresh_minutes=_env_int("FHIRLAKE_VIEW_REFRESH_MINUTES", 15),
        worker_threads=_env_int("FHIRLAKE_WORKER_THREADS", 1),
        auth_enabled=_env_bool("FHIRLAKE_AUTH_ENABLED", bool(env("FHIRLAKE_AUTH_ISSUER") or env("FHIRLAKE_AUTH_JWKS"))),
        auth_issuer=env("FHIRLAKE_AUTH_ISSUER") or None,
        auth_jwks=env("FHIRLAKE_AUTH_JWKS") or None,
        auth_audience=env("FHIRLAKE_AUTH_AUDIENCE") or None,
        auth_dev_secret=env("FHIRLAKE_AUTH_DEV_SECRET") or None,
        audit_durability=_choice("FHIRLAKE_AUDIT_DURABILITY", ("sync", "async"), "sync"),
    )
