"""`ragdock adapters ...`: push, list, show, promote, rollback and delete adapters through a running
gateway's admin API, so promotions load the adapter into the engine before the alias moves.

The gateway is `--gateway` or RAGDOCK_GATEWAY_URL (default http://127.0.0.1:8000); the admin key is
RAGDOCK_API_KEY.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from adapters.names import ModelRef

app = typer.Typer(help="Manage LoRA adapters (push, promote, rollback...).", no_args_is_help=True)
console = Console()

GatewayOption = Annotated[
    str,
    typer.Option(envvar="RAGDOCK_GATEWAY_URL", help="Gateway base URL."),
]


def _call(gateway: str, method: str, path: str, **kwargs: Any) -> Any:
    key = os.environ.get("RAGDOCK_API_KEY", "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        reply = httpx.request(
            method, f"{gateway.rstrip('/')}/v1{path}", headers=headers, timeout=300, **kwargs
        )
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the gateway at {gateway}: {exc}[/]")
        raise typer.Exit(2) from exc
    if reply.status_code >= 400:
        try:
            error = reply.json()["error"]
            console.print(
                f"[red]{reply.status_code} {error.get('code') or ''}: {error['message']}[/]"
            )
        except (ValueError, KeyError):
            console.print(f"[red]{reply.status_code}: {reply.text[:500]}[/]")
        raise typer.Exit(1)
    return reply.json() if reply.content else None


def _split(ref: str) -> tuple[str, str]:
    parsed = ModelRef.parse(ref)
    if not parsed.selector:
        console.print(f"[red]{ref!r}: give NAME@VERSION[/]")
        raise typer.Exit(2)
    return parsed.name, parsed.selector


@app.command()
def push(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False)],
    name: Annotated[str, typer.Option(help="Adapter name.")],
    version: Annotated[str | None, typer.Option(help="Version label (default: next vN).")] = None,
    gateway: GatewayOption = "http://127.0.0.1:8000",
) -> None:
    """Upload an adapter directory (PEFT files + manifest, as `ragdock train` writes it)."""
    files = [p for p in sorted(directory.iterdir()) if p.is_file()]
    upload = [("files", (p.name, p.read_bytes())) for p in files]
    data = {"name": name, **({"version": version} if version else {})}
    out = _call(gateway, "POST", "/adapters/upload", files=upload, data=data)
    console.print(f"[green]pushed[/] {out['model']} ({len(files)} files); request it as "
                  f"model='{out['model']}'")  # fmt: skip


@app.command("list")
def list_adapters(gateway: GatewayOption = "http://127.0.0.1:8000") -> None:
    """Adapters with their versions and aliases."""
    table = Table("name", "versions", "aliases")
    for item in _call(gateway, "GET", "/adapters")["data"]:
        aliases = ", ".join(f"{a} -> {v}" for a, v in sorted(item["aliases"].items()))
        table.add_row(item["name"], ", ".join(item["versions"]), aliases)
    console.print(table)


@app.command()
def show(ref: str, gateway: GatewayOption = "http://127.0.0.1:8000") -> None:
    """One version (NAME@VERSION): record, manifest and eval report."""
    name, version = _split(ref)
    console.print_json(json.dumps(_call(gateway, "GET", f"/adapters/{name}/{version}")))


@app.command()
def promote(
    ref: str,
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "prod",
    force: Annotated[
        bool, typer.Option(help="Skip the platform's verdict (platform keys only; audited).")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the audit log).")] = None,
    gateway: GatewayOption = "http://127.0.0.1:8000",
) -> None:
    """Point ALIAS at NAME@VERSION; refused unless the platform's verdict on its eval report
    passed (a report `ragdock eval` signed with the platform's key, judged by its gate)."""
    name, version = _split(ref)
    body = {"alias": alias, "force": force, **({"reason": reason} if reason else {})}
    out = _call(gateway, "POST", f"/adapters/{name}/{version}/promote", json=body)
    console.print(f"[green]{name}@{alias} -> {out['version']}[/] (before: {out['history'][-3:]})")


@app.command()
def rollback(
    name: str,
    alias: Annotated[str, typer.Option(help="Alias to move back.")] = "prod",
    gateway: GatewayOption = "http://127.0.0.1:8000",
) -> None:
    """Point ALIAS back at the version it pointed at before."""
    out = _call(gateway, "POST", f"/adapters/{name}/rollback", json={"alias": alias})
    console.print(f"[green]{name}@{alias} -> {out['version']}[/]")


@app.command()
def delete(ref: str, gateway: GatewayOption = "http://127.0.0.1:8000") -> None:
    """Delete NAME@VERSION (refused while an alias points at it)."""
    name, version = _split(ref)
    _call(gateway, "DELETE", f"/adapters/{name}/{version}")
    console.print(f"[green]deleted[/] {ref}")


@app.command()
def audit(name: str, gateway: GatewayOption = "http://127.0.0.1:8000") -> None:
    """The audit log of one adapter: who pushed, promoted, rolled back, and when."""
    table = Table("time", "actor", "action", "version", "alias", "detail")
    for entry in _call(gateway, "GET", f"/adapters/{name}/audit"):
        table.add_row(entry["time"], entry["actor"], entry["action"], entry.get("version") or "",
                      entry.get("alias") or "", json.dumps(entry.get("detail") or {}))  # fmt: skip
    console.print(table)
