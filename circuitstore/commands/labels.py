"""`circuitstore labels import`: feature labels from Neuronpedia's explanation exports."""

from __future__ import annotations

from pathlib import Path

import click

from circuitstore.clitools import (
    HELP,
    CircuitStoreGroup,
    connection_options,
    format_option,
    render_rows,
)
from circuitstore.query.labels import import_labels, read_files
from circuitstore.query.store import CircuitStore
from circuitstore.schema.connection import Neo4jSettings, open_driver, translate_errors


@click.group(cls=CircuitStoreGroup, context_settings=HELP)
def labels() -> None:
    """Feature labels: import Neuronpedia's explanations; find features by label with
    `circuitstore query search`."""


@labels.command("import")
@click.argument(
    "files",
    nargs=-1,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option(
    "--source",
    "source_set",
    metavar="NAME",
    help="The Neuronpedia source set the files hold (e.g. tres-dc): rows of any other are "
    "refused. Default: the one the rows name.",
)
@click.option(
    "--transcoder-set",
    "tset",
    envvar="CIRCUITSTORE_TRANSCODER_SET",
    help="Which transcoder set's features (needed when the store holds several).",
)
@connection_options
@format_option()
def import_cmd(
    files: tuple[Path, ...],
    source_set: str | None,
    tset: str | None,
    settings: Neo4jSettings,
    fmt: str,
) -> None:
    """Write the labels in FILES (Neuronpedia's explanation export of one source set: JSON
    Lines, gzipped or not, e.g. explanations/batch-0.jsonl.gz, or a JSON array) onto the
    store's features, with their provenance (source, explainer model, type, score).

    Every file is checked whole first; a malformed line or a layer or index the transcoder set
    does not have stops the import with nothing written. Running it again is harmless.

    Example: circuitstore labels import batch-0.jsonl.gz batch-1.jsonl.gz --source tres-dc
    """
    explanations = read_files(files, source_set)  # a bad file fails before connecting
    with open_driver(settings) as driver, translate_errors(settings):
        store = CircuitStore(driver, settings.database, tset, settings.uri)
        summary = import_labels(store, explanations, transcoder_set=tset)
    row = summary.as_row()
    row["files"] = ", ".join(summary.files)
    row["source_sets"] = ", ".join(summary.source_sets)
    click.echo(
        render_rows(
            [row],
            fmt,
            (
                "transcoder_set",
                "explanations",
                "features",
                "written",
                "skipped_blank",
                "source_sets",
                "files",
            ),
        )
    )
