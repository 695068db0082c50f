"""Connection settings and the Neo4j driver, with the driver's errors mapped to ours.

Settings come from `NEO4J_URI`, `NEO4J_USERNAME`, `NEO4J_PASSWORD`, `NEO4J_DATABASE` (or a dotenv
file, or CLI options). The password is a `SecretStr`: it never appears in a repr, a log line or an
error message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import neo4j
from neo4j import exceptions as neo4j_errors
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from circuitstore.errors import (
    ConfigError,
    ConstraintViolationError,
    SchemaError,
    StoreUnavailableError,
)

DEFAULT_URI = "bolt://127.0.0.1:7687"


class Neo4jSettings(BaseSettings):
    """Where the store lives and how to log in."""

    model_config = SettingsConfigDict(env_prefix="NEO4J_", extra="ignore", frozen=True)

    uri: str = DEFAULT_URI
    username: str = "neo4j"
    password: SecretStr | None = None
    database: str = "neo4j"

    @classmethod
    def load(cls, env_file: Path | None = None, **overrides: Any) -> Neo4jSettings:
        """Environment (or `env_file`), then non-None `overrides` (CLI options) on top."""
        given = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(_env_file=env_file, **given)  # type: ignore[call-arg]
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"Neo4j setting {first['loc'][0]}: {first['msg']}") from exc

    def require_password(self) -> str:
        if self.password is None:
            raise ConfigError(
                "NEO4J_PASSWORD is not set: export it or put it in a file named by --env-file"
            )
        return self.password.get_secret_value()


def open_driver(
    settings: Neo4jSettings, verify: bool = True, retry_seconds: float = 30.0
) -> neo4j.Driver:
    """A driver for `settings`; with `verify`, fail now (one clear line) if Neo4j can't be used.

    Managed transactions (`execute_read`/`execute_write`) are retried on transient errors
    (deadlocks, a leader switch, a restarting server) for up to `retry_seconds`.
    """
    driver = neo4j.GraphDatabase.driver(
        settings.uri,
        auth=(settings.username, settings.require_password()),
        max_transaction_retry_time=retry_seconds,
        # Server notifications (e.g. "property key does not exist" on a fresh store) are
        # advice for humans writing queries, not for a batch job's log.
        notifications_min_severity="OFF",
    )
    if verify:
        try:
            with translate_errors(settings):
                driver.verify_connectivity()
                driver.verify_authentication()
        except BaseException:
            driver.close()
            raise
    return driver


@contextmanager
def translate_errors(settings: Neo4jSettings | None = None) -> Iterator[None]:
    """Turn the driver's exceptions into the project's, each with the cause and the fix."""
    where = settings.uri if settings else "Neo4j"
    try:
        yield
    except neo4j_errors.AuthError as exc:
        raise StoreUnavailableError(
            f"{where} refused the credentials: check NEO4J_USERNAME / NEO4J_PASSWORD"
        ) from exc
    except neo4j_errors.ConstraintError as exc:
        raise ConstraintViolationError(f"constraint violated: {_first_line(exc.message)}") from exc
    except (neo4j_errors.ServiceUnavailable, neo4j_errors.SessionExpired, OSError) as exc:
        raise StoreUnavailableError(
            f"cannot reach Neo4j at {where}: start it with `circuitstore server start` "
            "or point NEO4J_URI at a running server"
        ) from exc
    except neo4j_errors.ConfigurationError as exc:
        raise ConfigError(f"Neo4j configuration: {_first_line(str(exc))}") from exc
    except neo4j_errors.ClientError as exc:
        raise SchemaError(f"Neo4j rejected the statement: {_first_line(exc.message)}") from exc


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if text else "no details"
