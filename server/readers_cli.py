"""`ragdock readers ...`: push, list, show, promote, roll back and delete grounding readers in the
reader registry, and read its audit log.

It works on the control plane and the registry volume directly (the same settings as the
gateway: RAGDOCK_HOME or RAGDOCK_ADAPTERS_DIR, RAGDOCK_DATABASE_URL), so it needs no running
gateway; gateways look up the reader `RAGDOCK_READER` names every `reader_reload_s` seconds
and load it when it changed (`server/rag/reader_watch.py`). Whoever can run it
holds the store's credentials, i.e. is the platform's operator: `--force` is allowed here, and
audited under `local/<user>` like every change.
"""

from __future__ import annotations

import contextlib
import getpass
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adapters.errors import RegistryError
from adapters.reader_registry import DEFAULT_READER, ReaderRegistry
from ragdock.settings import Settings
from server.app import open_control
from server.reader_setup import open_reader_registry

app = typer.Typer(
    help="Manage grounding readers (push, promote, rollback...).", no_args_is_help=True
)
console = Console()

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="YAML settings file (or RAGDOCK_CONFIG).")
]
AliasOption = Annotated[str, typer.Option(help="Alias to move.")]


def actor() -> str:
    """How the audit log names a change made from this command line."""
    return f"local/{getpass.getuser()}"


@contextlib.contextmanager
def _registry(config: Path | None) -> Iterator[ReaderRegistry]:
    """The registry the gateway reads; a refusal prints its message and exits 1."""
    settings = Settings.load(config)
    control = open_control(settings)
    try:
        yield open_reader_registry(settings, control)
    except RegistryError as exc:
        console.print(f"[red]{exc.code}: {escape(exc.message)}[/]")
        raise typer.Exit(1) from exc
    finally:
        control.close()


@app.command()
def push(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False)],
    name: Annotated[str, typer.Option(help="Reader name.")] = DEFAULT_READER,
    version: Annotated[str | None, typer.Option(help="Version label (default: next vN).")] = None,
    config: ConfigOption = None,
) -> None:
    """Copy a reader directory (manifest.json + weights, as `ragdock train` writes it) in as a
    new version; its weights are checked against the manifest's sha256."""
    with _registry(config) as registry:
        pushed = registry.push(directory, name, version=version, actor=actor())
        verdict = registry.verdict(pushed)
    gate = "passes" if verdict.passed else f"fails ({', '.join(verdict.failed_rules())})"
    console.print(f"[green]pushed[/] {pushed.ref}; the reader gate `{verdict.name}` {gate}")


@app.command("list")
def list_readers(config: ConfigOption = None) -> None:
    """Readers with their versions and aliases."""
    table = Table("name", "versions", "aliases")
    with _registry(config) as registry:
        for name in registry.names():
            versions = ", ".join(v.version for v in registry.versions(name))
            aliases = registry.aliases(name)
            table.add_row(
                name, versions, ", ".join(f"{a} -> {e['version']}" for a, e in aliases.items())
            )
    console.print(table)


@app.command()
def show(name: str, version: str, config: ConfigOption = None) -> None:
    """One version: its record and the reader gate's verdict, rule by rule."""
    with _registry(config) as registry:
        target = registry.resolve(name, version)
        verdict = registry.verdict(target)
    console.print_json(json.dumps({"ref": target.ref, "record": target.record}))
    table = Table("rule", "observed", "passed", "why", title=f"reader gate `{verdict.name}`")
    for rule in verdict.verdicts:
        table.add_row(rule.rule, rule.observed, "yes" if rule.passed else "[red]no[/]", rule.why)
    console.print(table)


@app.command()
def promote(
    name: str,
    version: str,
    alias: AliasOption = "prod",
    force: Annotated[
        bool, typer.Option(help="Move it whatever the reader gate says (audited as forced).")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the audit log).")] = None,
    config: ConfigOption = None,
) -> None:
    """Point NAME@ALIAS at VERSION; refused unless the reader gate passes on the figures its
    manifest had at push. Gateways load it on their next start."""
    with _registry(config) as registry:
        entry = registry.promote(name, version, alias, actor=actor(), force=force, reason=reason)
    console.print(
        f"[green]{name}@{alias} -> {entry['version']}[/] (before: {entry['history'][-3:]})"
    )


@app.command()
def rollback(name: str, alias: AliasOption = "prod", config: ConfigOption = None) -> None:
    """Point NAME@ALIAS back at the version it pointed at before."""
    with _registry(config) as registry:
        entry = registry.rollback(name, alias, actor=actor())
    console.print(f"[green]{name}@{alias} -> {entry['version']}[/]")


@app.command()
def delete(name: str, version: str, config: ConfigOption = None) -> None:
    """Delete NAME VERSION (refused while an alias points at it; its label stays taken)."""
    with _registry(config) as registry:
        registry.delete(name, version, actor=actor())
    console.print(f"[green]deleted[/] {name}@{version}")


@app.command()
def audit(
    name: Annotated[str, typer.Argument(help="Reader name.")] = DEFAULT_READER,
    config: ConfigOption = None,
) -> None:
    """Who pushed, promoted, rolled back and deleted versions of a reader, and when."""
    table = Table("time", "actor", "action", "version", "alias", "detail")
    with _registry(config) as registry:
        entries = registry.audit_entries(name)
    for entry in entries:
        table.add_row(entry["time"], entry["actor"], entry["action"], entry["version"] or "",
                      entry["alias"] or "", json.dumps(entry.get("detail") or {}))  # fmt: skip
    console.print(table)
