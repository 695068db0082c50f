"""`circuitstore demo`: the shipped demo model through a store, and what the store finds in it.

Starts the local Neo4j server unless it runs (or, with --no-server, uses the store NEO4J_URI
names), applies the schema, ingests a deterministic share of the shipped demo corpus with the
shipped model and transcoders (resumable: run again, nothing is written twice), then asks the
store a few questions through `circuitstore.query.CircuitStore`. Each answer is printed with the
`circuitstore query` command that asks it, node ids with their tokens, and each prompt's expected
answer beside the logit the store reached it through.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from circuitstore import demo as assets
from circuitstore.clitools import HELP, CircuitStoreCommand, connection_options
from circuitstore.commands.demo_questions import Questions, command
from circuitstore.commands.server import start_options
from circuitstore.demo.cypher import BROWSER_QUERY
from circuitstore.query import CircuitStore
from circuitstore.query.labels import import_labels
from circuitstore.schema.apply import apply_schema
from circuitstore.schema.connection import DEFAULT_URI, Neo4jSettings, display_uri, open_driver
from circuitstore.schema.errors import ConfigError, QueryError
from circuitstore.server import process
from circuitstore.server.config import (
    DEMO_HEAP,
    DEMO_PAGECACHE,
    PASSWORD_ENV,
    ServerSettings,
    default_home,
    validate_password,
)

RUN = "demo"
SERVER_TIMEOUT = 180.0
# The tasks whose first prompt in the shard the demo shows, in this order.
TASKS = ("ioi", "years", "induction")


@click.command("demo", cls=CircuitStoreCommand, context_settings=HELP)
# A smaller server than `server start`'s: the demo's store is a few hundred MB.
@start_options(DEMO_HEAP, DEMO_PAGECACHE, when="When the local server must be started")
@click.option(
    "--no-server",
    is_flag=True,
    help="Start no local server: use the store NEO4J_URI names (the Docker one, for example).",
)
@click.option(
    "--shard",
    default="0/4",
    show_default=True,
    help="I/N: the share of the 800 demo prompts to ingest (0/1: all of them, ~4x as long).",
)
@click.option("--progress/--no-progress", default=None, help="[default: on a terminal only]")
@connection_options
def demo(
    settings: Neo4jSettings,
    home: Path | None,
    bolt_port: int,
    http_port: int,
    heap: str,
    pagecache: str,
    no_server: bool,
    shard: str,
    progress: bool | None,
) -> None:
    """Fill a store with the shipped demo model's graphs and show what it finds.

    Starts the local Neo4j server if it does not run (the password comes from NEO4J_PASSWORD),
    applies the schema, ingests a quarter of the demo corpus (about 200 prompts, a few minutes
    on 2 cores; a rerun resumes and writes nothing twice), then answers: how an indirect-object,
    a year and an induction prompt reach their answers (expected answer beside the logit the
    store reached it through, node ids with their tokens), what drives a feature on those paths
    across the corpus and where it fires; and prints the Neo4j Browser address with a query to
    paste. Needs the ingest extra (pip install 'circuitstore[ingest]').

    \b
    Example:
      export NEO4J_PASSWORD=choose-a-password
      circuitstore demo
    """
    # The ingest side first: without the extra this fails (in one line) before anything starts.
    from circuitstore.ingest.config import IngestConfig
    from circuitstore.ingest.corpus import parse_shard, shard_of
    from circuitstore.ingest.runner import IngestRunner

    index, count = parse_shard(shard)
    password = settings.require_password()
    if no_server:
        browser = None
    else:
        local = ServerSettings(_home(home), bolt_port, http_port, heap, pagecache)
        status = _local_server(local, password, settings)
        settings = settings.model_copy(update={"uri": status.bolt_uri or local.bolt_uri})
        browser = status.browser_url or local.browser_url

    share = "all" if count == 1 else f"shard {index}/{count}"
    with open_driver(settings, retry_seconds=120) as driver:
        state = apply_schema(driver, settings.database)
        ours = sum(row.ours for row in state.rows)
        click.echo(f"schema version {state.version}: {ours} constraints and indexes in place")
        click.echo(
            f"ingesting the demo corpus ({share} of {assets.CORPUS.name}) with the demo model "
            f"and transcoders, as run {RUN!r}..."
        )
        cfg = IngestConfig.from_flat(
            model=str(assets.MODEL),
            transcoders=str(assets.TRANSCODERS),
            prompts=str(assets.CORPUS),
            run=RUN,
            shard_index=index,
            shard_count=count,
            progress=progress,
        )
        summary = IngestRunner(cfg, driver, settings.database, settings.uri).run()
        for line in summary.lines():
            click.echo(f"  {line}")

        rows = shown_prompts(lambda key: shard_of(key, count) == index)
        first = next(iter(rows.values()), None)
        if first is None:
            raise QueryError(f"--shard {shard} holds no prompt of the tasks {', '.join(TASKS)}")
        tset = CircuitStore(driver, settings.database, where=settings.uri).prompt(first["id"])
        store = CircuitStore(driver, settings.database, tset.transcoder_set, settings.uri)
        labelled = import_labels(store, [assets.LABELS], stored_only=True).written
        click.echo(
            f"labels: {labelled} of the stored features, from {assets.LABELS.name} (derived from "
            "the corpus generator's token categories; see `circuitstore query search`)"
        )
        Questions(store, click.echo).ask(rows)
    _echo_browser(browser, settings, home)
    if summary.failed:  # said in the summary above; the rerun that retries them is this command
        raise SystemExit(1)


def _home(home: Path | None) -> Path:
    return (home or default_home()).expanduser().resolve()


def _local_server(
    local: ServerSettings, password: str, settings: Neo4jSettings
) -> process.ServerStatus:
    """The local server of `local.home`, started unless it runs already."""
    current = process.status(local.home)
    target = current.bolt_uri if current.running else local.bolt_uri
    if settings.uri not in (target, DEFAULT_URI):
        raise ConfigError(
            f"NEO4J_URI names {display_uri(settings.uri)}, but the demo runs on the local "
            f"server ({target}): add --no-server to use the store NEO4J_URI names, or unset it"
        )
    if current.running:
        click.echo(f"local server running (pid {current.pid}) at {current.bolt_uri}")
        return current
    validate_password(password)  # the initial password of a new store: 8 characters or more
    click.echo(f"starting the local server (home {local.home})...")
    started = process.start(
        local, password, SERVER_TIMEOUT, notify=lambda message: click.echo(message, err=True)
    )
    click.echo(f"started (pid {started.status.pid}) in {started.seconds:.1f} s")
    return started.status


def _echo_browser(browser: str | None, settings: Neo4jSettings, home: Path | None) -> None:
    import circuitstore.query

    shipped = Path(circuitstore.query.__file__).parent
    click.echo("")
    if browser:
        click.echo(f"Neo4j Browser: {browser}  (user {settings.username}, your {PASSWORD_ENV})")
    else:
        click.echo(f"Neo4j Browser: the one of {display_uri(settings.uri)}")
    click.echo("Paste, for the strongest corpus-wide drivers of every layer-1 feature:")
    click.echo(f"  {BROWSER_QUERY}")
    click.echo(f"More queries: {shipped / 'cookbook.cypher'}; its style: {shipped / 'style.grass'}")
    if browser:
        where = () if home is None else ("--home", str(home))
        click.echo(f"Stop the server: {command('server', 'stop', *where)[2:]}")


def shown_prompts(in_shard: Callable[[str], bool]) -> dict[str, dict[str, Any]]:
    """The first prompt (by key) of each task in TASKS that the shard holds: corpus rows."""
    found: dict[str, dict[str, Any]] = {}
    with assets.CORPUS.open(encoding="utf-8") as corpus:
        rows = [json.loads(line) for line in corpus if line.strip()]
    for row in sorted(rows, key=lambda r: str(r["id"])):
        task = row.get("task")
        if task in TASKS and task not in found and in_shard(row["id"]):
            found[task] = row
    return {task: found[task] for task in TASKS if task in found}
