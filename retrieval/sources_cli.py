"""`ragdock sources ...`: create folder and SQL sources on a running gateway, sync them and
follow their jobs with a live progress bar.

The gateway owns the sources and runs their syncs (its worker reads the folder or the database,
on its machine, with its environment), so this is only an HTTP client of `/v1/sources` and
`/v1/jobs`: it never opens the store or the control plane. A spec is built and checked here
against the same contract the gateway validates (`ragdock.contracts.source_spec`), so a wrong
flag is named before anything is sent, and credentials travel only as references (a variable
or a secret file on the gateway's machine), never in clear.

The gateway is `--gateway` or RAGDOCK_GATEWAY_URL (default http://127.0.0.1:8000); the key is
RAGDOCK_API_KEY (the `ingest` scope).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from ragdock.contracts.source_spec import FolderSpec, SqlSpec
from ragdock.progress import progress_bar

app = typer.Typer(
    help="Folder and SQL sources of a running gateway, and their sync jobs.",
    no_args_is_help=True,
)
console = Console()

DEFAULT_GATEWAY = "http://127.0.0.1:8000"
ACTIVE = ("running", "queued")
ENDED = ("succeeded", "failed", "cancelled")
# The gateway names no source for a job whose source was deleted (its purge job included).
_GONE = "(deleted)"
SHOWN_ERRORS = 10  # the first errors a finished sync prints; `ragdock sources job ID` has them all

GatewayOption = Annotated[
    str, typer.Option("--gateway", envvar="RAGDOCK_GATEWAY_URL", help="Gateway base URL.")
]
FollowOption = Annotated[
    bool, typer.Option(help="Follow the sync with a live progress bar until it ends.")
]
PollOption = Annotated[
    float, typer.Option(min=0, help="Seconds between two reads of a followed job.")
]


def open_client(gateway: str, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """The HTTP client every command talks through.

    Args:
        gateway: the gateway's base URL.
        transport: the one seam tests use (an `httpx.MockTransport` scripting the replies);
            None: the network.
    """
    key = os.environ.get("RAGDOCK_API_KEY", "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(
        base_url=f"{gateway.rstrip('/')}/v1", headers=headers, timeout=60, transport=transport
    )


class ApiError(Exception):
    """An error reply of the gateway (its OpenAI-shaped `error` object)."""

    def __init__(self, status: int, message: str, code: str | None) -> None:
        self.status, self.message, self.code = status, message, code
        super().__init__(f"{status} {code or 'error'}: {message}")


class _Api:
    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The reply's JSON (None for an empty reply).

        Raises:
            ApiError: the gateway answered with an error.
        """
        reply = self.http.request(method, path, **kwargs)
        if reply.status_code >= 400:
            try:
                error = reply.json()["error"]
                message, code = str(error["message"]), error.get("code")
            except (ValueError, KeyError, TypeError, AttributeError):  # not the gateway's shape
                message, code = reply.text[:500] or reply.reason_phrase, None
            raise ApiError(reply.status_code, message, code)
        return reply.json() if reply.content else None

    def job(self, job_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self.call("GET", f"/jobs/{quote(job_id, safe='')}")
        return out


@contextlib.contextmanager
def _session(gateway: str) -> Iterator[_Api]:
    """The gateway's API; an error reply is printed in red (exit 1), an unreachable gateway
    with what to check (exit 2)."""
    try:
        with open_client(gateway) as http:
            yield _Api(http)
    except ApiError as exc:
        console.print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(1) from None
    except httpx.ConnectError as exc:
        console.print(
            f"[red]cannot reach the gateway at {gateway} ({exc})[/]: is it running (`ragdock up` "
            "or `ragdock serve`)? Point --gateway or RAGDOCK_GATEWAY_URL at it.",
            highlight=False,
        )
        raise typer.Exit(2) from None
    except httpx.HTTPError as exc:
        console.print(f"[red]the gateway at {gateway} did not answer: {exc}[/]", highlight=False)
        raise typer.Exit(2) from None


# -- building a spec -------------------------------------------------------------------------
# The spec's fields as the flags that set them, so a refused spec names what to change.
_FLAGS = {
    "path": "--folder", "include": "--include", "exclude": "--exclude", "url": "--sql-url",
    "url_env": "--sql-url-env", "url_file": "--sql-url-file", "password_env": "--password-env",
    "password_file": "--password-file", "query": "--query", "id_column": "--id-column",
    "title_column": "--title-column", "text_column": "--text-column",
    "updated_at_column": "--updated-at-column", "metadata_columns": "--metadata-column",
    "full_every": "--full-every",
}  # fmt: skip


def build_spec(
    folder: str | None, include: list[str], exclude: list[str], sql: dict[str, Any]
) -> dict[str, Any]:
    """The `spec` of a source from the flags given: only what was given (the gateway fills in
    the contract's defaults), checked against the contract first.

    Args:
        folder: the folder's path on the gateway's machine, or None for a SQL source.
        include, exclude: globs of a folder source.
        sql: the SQL flags by spec field; None for flags not given.

    Raises:
        typer.BadParameter: neither or both kinds, flags of the other kind, or a spec the
            contract refuses (named by its flag).
    """
    given = {name: value for name, value in sql.items() if value not in (None, [])}
    urls = [n for n in ("url", "url_env", "url_file") if n in given]
    if (folder is None) == (not urls):
        raise typer.BadParameter(
            "give --folder PATH, or one of --sql-url-env, --sql-url-file or --sql-url"
        )
    if folder is not None:
        if given:
            raise typer.BadParameter(f"{_FLAGS[next(iter(given))]} is an option of SQL sources")
        data: dict[str, Any] = {"kind": "folder", "path": folder}
        data |= {"include": include} if include else {}
        data |= {"exclude": exclude} if exclude else {}
        return _checked(FolderSpec, data)
    if include or exclude:
        raise typer.BadParameter("--include and --exclude are options of folder sources")
    if "url" in given and urlsplit(given["url"]).password:
        raise typer.BadParameter(
            "the --sql-url holds a password: give it as --password-env or --password-file, "
            "or the whole URL as --sql-url-env or --sql-url-file"
        )
    # `--title-column ""` / `--updated-at-column ""`: the query has no such column.
    data = {"kind": "sql"} | {n: (None if v == "" else v) for n, v in given.items()}
    return _checked(SqlSpec, data)


def _checked(model: type[FolderSpec | SqlSpec], data: dict[str, Any]) -> dict[str, Any]:
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{_FLAGS[field]}: {message}" if field in _FLAGS else message)
        raise typer.BadParameter("; ".join(problems)) from None
    return spec.model_dump(mode="json", exclude_unset=True)


# -- how things read ---------------------------------------------------------------------------
def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours < 48 else f"{hours // 24}d{hours % 24:02d}h"


def _age(at: float | None) -> str:
    return "-" if at is None else f"{_duration(time.time() - at)} ago"


def _interval(interval_s: float | None) -> str:
    return "on demand" if interval_s is None else f"every {_duration(interval_s)}"


def _counts(progress: dict[str, Any]) -> str:
    return ", ".join(
        f"{progress[n]} {n}" for n in ("added", "updated", "unchanged", "deleted", "failed")
    )


def _done(progress: dict[str, Any]) -> str:
    return f"{progress['seen']}/{'?' if progress['total'] is None else progress['total']}"


def _brief(job: dict[str, Any] | None) -> str:
    """One job in a line: what it is and where it stands."""
    if job is None:
        return "-"
    cancel = " (cancel requested)" if job["cancel_requested"] and job["state"] in ACTIVE else ""
    return f"{job['state']}{cancel} {job['kind']} {_done(job['progress'])}  [dim]{job['id']}[/]"


def _note(job: dict[str, Any]) -> str:
    """What the live bar says beside its count: the counts, the rate and the time left."""
    parts = [_counts(job["progress"])]
    if job["rate_per_s"] is not None:
        parts.append(f"{job['rate_per_s']:.1f}/s")
    if job["eta_s"] is not None:
        parts.append(f"ETA {_duration(job['eta_s'])}")
    return " | ".join(parts)


# -- following a job ---------------------------------------------------------------------------
def follow(api: _Api, job: dict[str, Any], poll_s: float) -> dict[str, Any]:
    """Read `job` every `poll_s` seconds until it ends, drawing its progress live.

    Returns:
        The ended job, with its `errors` (as GET /v1/jobs/{id} gives them).

    Raises:
        typer.Exit: 130 on Ctrl-C (the job goes on on the gateway; the message says so).
    """
    label = f"sync {job['source'] or job['collection']}"
    try:
        with progress_bar(console) as bar:
            p = job["progress"]
            task = bar.add_task(
                f"{label} {job['state']}", total=p["total"], completed=p["seen"], info=_note(job)
            )
            while job["state"] not in ENDED:
                time.sleep(poll_s)
                job = api.job(job["id"])
                p = job["progress"]
                # a total the job never learnt: the bar is full once it ends, not left pulsing
                total = p["seen"] if p["total"] is None and job["state"] in ENDED else p["total"]
                bar.update(
                    task, description=f"{label} {job['state']}", total=total,
                    completed=p["seen"], info=_note(job),
                )  # fmt: skip
    except KeyboardInterrupt:
        console.print(
            f"[yellow]stopped following job {job['id']}[/]: it goes on on the gateway "
            f"(`ragdock sources cancel {job['id']}` stops it)",
            highlight=False,
        )
        raise typer.Exit(130) from None
    return job if job.get("errors") is not None else api.job(job["id"])


def report(job: dict[str, Any]) -> None:
    """Print how an ended job went: its counts, its error and its first item errors.

    Raises:
        typer.Exit: 1 when it failed or was cancelled.
    """
    p = job["progress"]
    took = (
        f" in {_duration(job['finished_at'] - job['started_at'])}"
        if job["finished_at"] and job["started_at"]
        else ""
    )
    colour = {"succeeded": "green", "failed": "red"}.get(job["state"], "yellow")
    console.print(
        f"[{colour}]{job['state']}[/] job {job['id']} ({job['kind']}): {p['seen']} seen, "
        f"{_counts(p)}{took}",
        highlight=False,
    )
    if job["error"]:
        console.print(f"[red]{job['error']}[/]", highlight=False)
    errors = job.get("errors") or []
    for error in errors[:SHOWN_ERRORS]:
        console.print(f"  [red]{error['item']}[/]: {error['error']}", highlight=False)
    if p["failed"] > SHOWN_ERRORS:
        console.print(
            f"  ... {p['failed'] - SHOWN_ERRORS} more (`ragdock sources job {job['id']}`)",
            highlight=False,
        )
    if job["state"] != "succeeded":
        raise typer.Exit(1)


def _follow_or_say(api: _Api, job: dict[str, Any], *, follow_it: bool, poll_s: float) -> None:
    if follow_it:
        report(follow(api, job, poll_s))
    else:
        console.print(
            f"job {job['id']} {job['state']}: `ragdock sources job {job['id']}` shows it",
            highlight=False,
        )


def _active_job(api: _Api, source: str, conflict: ApiError) -> dict[str, Any]:
    """The job that keeps `source` from another sync (it may have moved on since the 409)."""
    for state in ACTIVE:
        found = api.call("GET", "/jobs", params={"source": source, "state": state, "limit": 1})
        if found["data"]:
            job: dict[str, Any] = found["data"][0]
            return job
    named = re.search(r"job (\S+)$", conflict.message)  # ended meanwhile: follow it to its end
    if named:
        return api.job(named.group(1))
    raise conflict


# -- commands ----------------------------------------------------------------------------------
@app.command()
def create(
    name: Annotated[str, typer.Argument(help="The source's name (unique in the tenant).")],
    collection: Annotated[
        str, typer.Option("--collection", "-c", help="Collection its documents go to.")
    ],
    folder: Annotated[
        str | None,
        typer.Option(help="Folder: a directory on the gateway's host (in RAGDOCK_SOURCE_ROOTS)."),
    ] = None,
    include: Annotated[
        list[str] | None, typer.Option(help="Folder: glob of files to read (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Folder: glob of files to skip (repeatable).")
    ] = None,
    sql_url_env: Annotated[
        str | None, typer.Option(help="SQL: the variable that holds the whole URL.")
    ] = None,
    sql_url_file: Annotated[
        str | None, typer.Option(help="SQL: the secret file that holds the whole URL.")
    ] = None,
    sql_url: Annotated[
        str | None, typer.Option(help="SQL: a URL without its password (see --password-*).")
    ] = None,
    password_env: Annotated[
        str | None, typer.Option(help="SQL: the variable that holds --sql-url's password.")
    ] = None,
    password_file: Annotated[
        str | None, typer.Option(help="SQL: the secret file that holds --sql-url's password.")
    ] = None,
    query: Annotated[str | None, typer.Option(help="SQL: the SELECT, one row a document.")] = None,
    id_column: Annotated[str | None, typer.Option(help="SQL (default id).")] = None,
    title_column: Annotated[str | None, typer.Option(help='SQL (default title; "": none).')] = None,
    text_column: Annotated[str | None, typer.Option(help="SQL (default text).")] = None,
    updated_at_column: Annotated[
        str | None, typer.Option(help='SQL (default updated_at; "": none, every sync is full).')
    ] = None,
    metadata_column: Annotated[
        list[str] | None, typer.Option(help="SQL: a column kept as metadata (repeatable).")
    ] = None,
    full_every: Annotated[
        int | None, typer.Option(help="SQL: every N-th scheduled sync reads every row.")
    ] = None,
    interval: Annotated[
        float | None, typer.Option(help="Sync every SECONDS (default: only when asked).")
    ] = None,
    sync: Annotated[bool, typer.Option(help="Queue a first sync at once.")] = True,
    follow_it: Annotated[
        bool, typer.Option("--follow/--no-follow", help="Follow the first sync to its end.")
    ] = True,
    poll_interval: PollOption = 0.5,
    gateway: GatewayOption = DEFAULT_GATEWAY,
) -> None:
    """Create a folder or SQL source (credentials by reference only) and sync it."""
    sql = {
        "url": sql_url, "url_env": sql_url_env, "url_file": sql_url_file,
        "password_env": password_env, "password_file": password_file, "query": query,
        "id_column": id_column, "title_column": title_column, "text_column": text_column,
        "updated_at_column": updated_at_column, "metadata_columns": metadata_column or [],
        "full_every": full_every,
    }  # fmt: skip
    spec = build_spec(folder, include or [], exclude or [], sql)
    body: dict[str, Any] = {"name": name, "collection": collection, "spec": spec, "sync": sync}
    if interval is not None:
        body["interval_s"] = interval
    with _session(gateway) as api:
        out = api.call("POST", "/sources", json=body)
        console.print(
            f"[green]created[/] source {out['name']} ({out['kind']} -> collection "
            f"{out['collection']}, {_interval(out['interval_s'])})",
            highlight=False,
        )
        if out["active_job"] is not None:
            _follow_or_say(api, out["active_job"], follow_it=follow_it, poll_s=poll_interval)


@app.command("list")
def list_sources(gateway: GatewayOption = DEFAULT_GATEWAY) -> None:
    """Sources with their schedule, last success and active job."""
    with _session(gateway) as api:
        sources = api.call("GET", "/sources")["data"]
    table = Table("name", "collection", "kind", "interval", "last success", "active job")
    for source in sources:
        active = source["active_job"]
        table.add_row(
            source["name"], source["collection"], source["kind"], _interval(source["interval_s"]),
            _age(source["last_success_at"]),
            "-" if active is None else f"{active['state']} {_done(active['progress'])}",
        )  # fmt: skip
    console.print(table)


@app.command()
def show(name: str, gateway: GatewayOption = DEFAULT_GATEWAY) -> None:
    """One source: its spec (credentials appear only as references), last and active job."""
    with _session(gateway) as api:
        out = api.call("GET", f"/sources/{quote(name, safe='')}")
    console.print(
        f"[bold]{out['name']}[/] ({out['kind']}) -> collection {out['collection']}, "
        f"{_interval(out['interval_s'])}; created by {out['created_by']} "
        f"{_age(out['created_at'])}; {out['syncs']} syncs, last success "
        f"{_age(out['last_success_at'])}",
        highlight=False,
    )
    # the fields that say something: a SQL spec's unused references are null
    console.print_json(json.dumps({k: v for k, v in out["spec"].items() if v is not None}))
    console.print(f"last job:   {_brief(out['last_job'])}", highlight=False)
    console.print(f"active job: {_brief(out['active_job'])}", highlight=False)


@app.command("sync")
def sync_source(
    name: str,
    incremental: Annotated[
        bool, typer.Option(help="SQL: read only rows updated since the last sync.")
    ] = False,
    follow_it: Annotated[
        bool, typer.Option("--follow/--no-follow", help="Follow the sync to its end.")
    ] = True,
    poll_interval: PollOption = 0.5,
    gateway: GatewayOption = DEFAULT_GATEWAY,
) -> None:
    """Sync a source now, and follow its job live to its end (exit 1 if it fails).

    With --follow (the default) a live bar shows the job until it ends, then its counts and
    first errors; a job that failed or was cancelled exits 1. A sync already queued or running
    for the source is followed instead of refused."""
    with _session(gateway) as api:
        try:
            path = f"/sources/{quote(name, safe='')}/sync"
            job = api.call("POST", path, json={"full": not incremental})
        except ApiError as exc:
            if exc.code != "job_already_active" or not follow_it:
                raise
            job = _active_job(api, name, exc)
            console.print(
                f"[yellow]{name} has a sync {job['state']} already[/]: following job {job['id']}",
                highlight=False,
            )
        _follow_or_say(api, job, follow_it=follow_it, poll_s=poll_interval)


@app.command()
def delete(name: str, gateway: GatewayOption = DEFAULT_GATEWAY) -> None:
    """Delete a source; a job of the gateway's purges its documents from the collection."""
    with _session(gateway) as api:
        api.call("DELETE", f"/sources/{quote(name, safe='')}")
    console.print(f"[green]deleted[/] source {name}; a job purges its documents", highlight=False)


@app.command()
def jobs(
    name: Annotated[str | None, typer.Argument(help="Only this source's jobs.")] = None,
    state: Annotated[
        str | None, typer.Option(help="queued, running, succeeded, failed or cancelled.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 50,
    gateway: GatewayOption = DEFAULT_GATEWAY,
) -> None:
    """Jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    params |= {"source": name} if name else {}
    params |= {"state": state} if state else {}
    with _session(gateway) as api:
        found = api.call("GET", "/jobs", params=params)["data"]
    counted = ("added", "updated", "unchanged", "deleted", "failed")
    table = Table("id", "source", "kind", "trigger", "state", "done", *counted, "created", "took")
    for job in found:
        took = (
            _duration((job["finished_at"] or time.time()) - job["started_at"])
            if job["started_at"]
            else "-"
        )
        table.add_row(
            job["id"], job["source"] or _GONE, job["kind"], job["trigger"], job["state"],
            _done(job["progress"]), *(str(job["progress"][n]) for n in counted),
            _age(job["created_at"]), took,
        )  # fmt: skip
    console.print(table)


@app.command()
def job(
    job_id: Annotated[str, typer.Argument(metavar="ID")], gateway: GatewayOption = DEFAULT_GATEWAY
) -> None:
    """One job: its state, counts, error and the items it skipped with why (the first 100)."""
    with _session(gateway) as api:
        out = api.job(job_id)
    took = (
        f", took {_duration((out['finished_at'] or time.time()) - out['started_at'])}"
        if out["started_at"]
        else ""
    )
    console.print(
        f"job {out['id']}: source {out['source'] or _GONE} -> {out['collection']}, "
        f"{out['kind']} ({out['trigger']}), attempt {out['attempts']}, created "
        f"{_age(out['created_at'])}{took}",
        highlight=False,
    )
    console.print(f"{_brief(out)}  {_note(out)}", highlight=False)
    if out["error"]:
        console.print(f"[red]{out['error']}[/]", highlight=False)
    for error in out["errors"] or []:
        console.print(f"  [red]{error['item']}[/]: {error['error']}", highlight=False)


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(metavar="ID")], gateway: GatewayOption = DEFAULT_GATEWAY
) -> None:
    """Cancel a queued or running job (a running one stops at its next item)."""
    with _session(gateway) as api:
        out = api.call("POST", f"/jobs/{quote(job_id, safe='')}/cancel")
    what = "cancelled" if out["state"] == "cancelled" else f"cancel requested ({out['state']})"
    console.print(f"[yellow]{what}[/]: job {out['id']}", highlight=False)
