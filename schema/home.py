"""Where circuitstore keeps its state outside any checkout: the run catalog and the local
server's home. One rule for both, so that they always sit side by side."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from circuitstore.schema.errors import ConfigError

HOME_ENV = "CIRCUITSTORE_HOME"


def data_home(env: Mapping[str, str] | None = None) -> Path:
    """$CIRCUITSTORE_HOME, else $XDG_DATA_HOME/circuitstore, else ~/.local/share/circuitstore.
    Refused in one line when it cannot be a folder (a file there, or a file above it)."""
    env = os.environ if env is None else env
    if env.get(HOME_ENV):
        home, name = Path(env[HOME_ENV]).expanduser(), HOME_ENV
    else:
        base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        home, name = Path(base).expanduser() / "circuitstore", "the data folder"
    for path in (home, *home.parents):
        if path.exists() and not path.is_dir():
            what = "is" if path == home else f"lies below {path}, which is"
            raise ConfigError(f"{name} {home} {what} a file; point {HOME_ENV} at a folder")
    return home
