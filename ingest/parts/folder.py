"""A parts folder on any filesystem pyarrow opens: atomic writes, listings, reading stamps."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from circuitstore.ingest.parts.format import PartsError, Stamp, stamp_of
from circuitstore.schema.connection import display_uri

TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Folder:
    """A parts folder: `url` as given (for messages), the filesystem and the root path in it."""

    url: str
    fs: pafs.FileSystem
    root: str

    @classmethod
    def open(cls, url: str) -> Folder:
        """A local folder (a path or file://) or any URL a pyarrow filesystem opens (s3://,
        gs://, hdfs://); PartsError for a scheme pyarrow does not know."""
        if "://" not in url:
            return cls(url, pafs.LocalFileSystem(), str(Path(url).expanduser().resolve()))
        try:
            fs, root = pafs.FileSystem.from_uri(url)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            scheme = url.split("://", 1)[0]
            raise PartsError(
                f"{display_uri(url)}: pyarrow cannot open {scheme}:// URLs ({_first_line(exc)}); "
                "give a local folder, file://, s3://, gs:// or hdfs://"
            ) from None
        return cls(url, fs, root.rstrip("/"))

    @property
    def shown(self) -> str:
        """The folder's URL as messages show it (no credentials)."""
        return display_uri(self.url)

    def path(self, rel: str) -> str:
        """A path inside the folder, as its filesystem takes it."""
        return f"{self.root}/{rel}"

    def check_writable(self, tables: tuple[str, ...]) -> None:
        """Create the folder and its tables' folders and prove a file can be written there."""
        try:
            for name in ("", *tables):
                self.fs.create_dir(self.path(name).rstrip("/"), recursive=True)
            probe = self.path(f"{TMP_PREFIX}probe-{uuid.uuid4().hex}")
            with self.fs.open_output_stream(probe) as out:
                out.write(b"")
            self.fs.delete_file(probe)
        except (OSError, pa.ArrowException) as exc:
            raise PartsError(
                f"{self.shown}: cannot write parts there ({_first_line(exc)})"
            ) from None

    def exists(self, rel: str) -> bool:
        """Whether the file is there."""
        return bool(self.fs.get_file_info(self.path(rel)).type == pafs.FileType.File)

    def names(self, table: str) -> list[str]:
        """The committed files of a table's folder (not the temporary ones), sorted."""
        selector = pafs.FileSelector(self.path(table), allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return sorted(
            i.base_name
            for i in infos
            if i.type == pafs.FileType.File
            and i.base_name.endswith(".parquet")
            and not i.base_name.startswith(".")
        )

    def size(self) -> int:
        """Bytes of every file in the folder."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True))
        return sum(i.size or 0 for i in infos if i.type == pafs.FileType.File)

    def write(self, rel: str, table: pa.Table) -> None:
        """Write under a temporary name beside the target, then rename: the file appears whole
        or not at all (on object stores, the upload is the atomic step)."""
        final = self.path(rel)
        parent, _, base = final.rpartition("/")
        tmp = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex}-{base}"
        try:
            pq.write_table(table, tmp, filesystem=self.fs, compression="zstd")
            self.fs.move(tmp, final)
        except (OSError, pa.ArrowException) as exc:
            raise PartsError(f"{self.shown}: cannot write {rel} ({_first_line(exc)})") from None

    def read(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        """A whole file (or some of its columns)."""
        try:
            return pq.read_table(self.path(rel), filesystem=self.fs, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise PartsError(f"{self.shown}/{rel}: unreadable ({_first_line(exc)})") from None

    def schema(self, rel: str) -> pa.Schema:
        """A file's schema from its footer: a truncated or non-Parquet file fails here."""
        try:
            with self.fs.open_input_file(self.path(rel)) as handle:
                return pq.read_schema(handle)
        except (OSError, pa.ArrowException) as exc:
            raise PartsError(
                f"{self.shown}/{rel}: not a readable Parquet file, truncated or foreign "
                f"({_first_line(exc)})"
            ) from None

    def stamp(self, rel: str, table: str) -> Stamp:
        """The set and graph settings a file was written for (PartsError where it has none)."""
        return stamp_of(f"{self.shown}/{rel}", self.schema(rel).metadata, table)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
