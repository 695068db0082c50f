"""HuggingFace repos through huggingface_hub's cache: only the files a layout needs are fetched,
and with the cache populated everything works offline (HF_HUB_CACHE, HF_HUB_OFFLINE=1).

A source names `owner/name`, optionally a folder inside the repo and a revision:
`owner/name[/sub/folder][@revision]` (circuit-tracer's form; an `hf://` prefix is allowed).
Files listed in a circuit-tracer config as `hf://owner/name/path?revision=r` resolve here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from circuitstore.ingest.safeload import load_failure
from circuitstore.schema.errors import TranscoderLoadError

_PART = re.compile(r"[A-Za-z0-9][\w.-]*")


@dataclass(frozen=True)
class HubRef:
    """A repo, a folder inside it ("" for its root) and a revision (None: main)."""

    repo_id: str
    subfolder: str = ""
    revision: str | None = None

    def __str__(self) -> str:
        path = "/".join(p for p in (self.repo_id, self.subfolder) if p)
        return f"{path}@{self.revision}" if self.revision else path


def parse_ref(source: str) -> HubRef:
    """The repo a source names; a source that cannot be one is refused in one line."""
    path, _, revision = source.removeprefix("hf://").partition("@")
    parts = path.rstrip("/").split("/")
    if len(parts) < 2 or not all(_PART.fullmatch(p) for p in parts):
        raise TranscoderLoadError(
            f"{source}: not a folder and not a HuggingFace repo id (owner/name[/folder][@revision])"
        )
    return HubRef("/".join(parts[:2]), "/".join(parts[2:]), revision or None)


def download(ref: HubRef, patterns: list[str]) -> Path:
    """The repo's folder in the cache, holding the files matching `patterns` (relative to the
    ref's folder); a snapshot already cached is used as it is when offline."""
    from huggingface_hub import snapshot_download

    prefix = f"{ref.subfolder}/" if ref.subfolder else ""
    try:
        root = snapshot_download(
            ref.repo_id, revision=ref.revision, allow_patterns=[prefix + p for p in patterns]
        )
    except Exception as exc:
        raise TranscoderLoadError(
            f"{ref}: cannot download transcoders ({load_failure(exc)})"
        ) from None
    folder = Path(root) / ref.subfolder
    if not folder.is_dir():
        raise TranscoderLoadError(f"{ref}: the repo has no folder {ref.subfolder}")
    return folder


def file(ref: HubRef, name: str) -> Path:
    """One file of the repo's folder, through the cache."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(
                ref.repo_id, name, subfolder=ref.subfolder or None, revision=ref.revision
            )
        )
    except Exception as exc:
        raise TranscoderLoadError(f"{ref}: cannot download {name} ({load_failure(exc)})") from None


def list_files(ref: HubRef) -> list[str]:
    """The paths of the files in the ref's folder, relative to it: the hub's listing, or the
    cached snapshot's when offline or when the hub cannot be reached."""
    from huggingface_hub import HfApi, constants

    names: list[str] | None = None
    if not constants.HF_HUB_OFFLINE:
        try:
            names = HfApi().list_repo_files(ref.repo_id, revision=ref.revision)
        except Exception:  # unreachable hub, a gated repo: what the cache holds may still do
            names = None
    if names is None:
        names = _cached_files(ref)
    prefix = f"{ref.subfolder}/" if ref.subfolder else ""
    return [n[len(prefix) :] for n in names if n.startswith(prefix)]


def _cached_files(ref: HubRef) -> list[str]:
    from huggingface_hub import snapshot_download

    try:
        root = Path(snapshot_download(ref.repo_id, revision=ref.revision, local_files_only=True))
    except Exception as exc:
        raise TranscoderLoadError(
            f"{ref}: cannot list the repo's files and no snapshot is cached ({load_failure(exc)})"
        ) from None
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def resolve_uri(uri: str) -> Path:
    """A file named `hf://owner/name/path/in/repo[?revision=r]`, through the cache."""
    from huggingface_hub import hf_hub_download

    parsed = urlparse(uri)
    repo_name, _, filename = parsed.path.lstrip("/").partition("/")
    if parsed.scheme != "hf" or not parsed.netloc or not repo_name or not filename:
        raise TranscoderLoadError(f"{uri}: not an hf://owner/name/path URI")
    revision = parse_qs(parsed.query).get("revision", [None])[0]
    try:
        return Path(
            hf_hub_download(f"{parsed.netloc}/{repo_name}", filename, revision=revision or None)
        )
    except Exception as exc:
        raise TranscoderLoadError(f"{uri}: cannot download ({load_failure(exc)})") from None
