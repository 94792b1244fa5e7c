"""``fhirlake clients``: register SMART Backend Services clients (their public keys and scopes)."""

from __future__ import annotations

import click
from sqlalchemy import Engine

from fhirlake.auth.clients import ClientRegistrationError, ClientRegistry, read_jwks_argument
from fhirlake.auth.scopes import ScopeError
from fhirlake.config import Settings, load_settings


def _engine(ctx: click.Context) -> Engine:
    from fhirlake.server.database import open_database

    root = ctx.find_root().obj
    settings = root if isinstance(root, Settings) else load_settings()
    engine, _ = open_database(settings)
    return engine


@click.group()
def clients() -> None:
    """Backend Services clients allowed to obtain tokens at /auth/token."""


@clients.command("add")
@click.option("--client-id", required=True, help="The client's id (its assertions' iss and sub).")
@click.option(
    "--jwks", "jwks_source", required=True, help="A JWKS file (read now) or an https URL (fetched when used)."
)
@click.option("--scope", required=True, help='Scopes the client may be granted, e.g. "system/*.rs".')
@click.option("--replace", is_flag=True, help="Replace an existing registration of this client id.")
@click.pass_context
def add(ctx: click.Context, client_id: str, jwks_source: str, scope: str, replace: bool) -> None:
    """Register a client."""
    try:
        jwks, jwks_url = read_jwks_argument(jwks_source)
        client = ClientRegistry(_engine(ctx)).add(
            client_id, scope, jwks=jwks, jwks_url=jwks_url, replace=replace
        )
    except (ClientRegistrationError, ScopeError) as exc:
        raise click.ClickException(str(exc)) from exc
    keys = f"JWKS URL {client.jwks_url}" if client.jwks_url else f"{len(client.jwks['keys'])} key(s)"  # type: ignore[index]
    click.echo(f"registered {client.client_id}: {keys}; scope {client.scope}")


@clients.command("list")
@click.pass_context
def list_(ctx: click.Context) -> None:
    """List registered clients."""
    rows = ClientRegistry(_engine(ctx)).list_clients()
    if not rows:
        click.echo("no clients registered")
    for client in rows:
        keys = client.jwks_url or f"{len((client.jwks or {}).get('keys', []))} inline key(s)"
        created = client.created_at.isoformat(timespec="seconds") if client.created_at else ""
        click.echo(f"{client.client_id}\t{client.scope}\t{keys}\t{created}")


@clients.command("remove")
@click.option("--client-id", required=True)
@click.pass_context
def remove(ctx: click.Context, client_id: str) -> None:
    """Remove a client (tokens it already holds expire within minutes)."""
    if not ClientRegistry(_engine(ctx)).remove(client_id):
        raise click.ClickException(f"no client {client_id!r}")
    click.echo(f"removed {client_id}")
