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
from pydantic import SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from circuitstore.schema.errors import (
    ConfigError,
    ConstraintViolationError,
    SchemaError,
    StoreUnavailableError,
    TransactionMemoryError,
)
from circuitstore.schema.inputs import url_port_problem

DEFAULT_URI = "bolt://127.0.0.1:7687"


class Neo4jSettings(BaseSettings):
    """Where the store lives and how to log in."""

    model_config = SettingsConfigDict(env_prefix="NEO4J_", extra="ignore", frozen=True)

    uri: str = DEFAULT_URI
    username: str = "neo4j"
    password: SecretStr | None = None
    database: str = "neo4j"

    @field_validator("uri")
    @classmethod
    def _bolt_uri(cls, uri: str) -> str:
        check_uri(uri)
        return uri

    @classmethod
    def load(cls, env_file: Path | None = None, **overrides: Any) -> Neo4jSettings:
        """Environment (or `env_file`), then non-None `overrides` (CLI options) on top."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if env_file is not None:
            check_env_file(env_file)
        try:
            return cls(_env_file=env_file, **given)  # type: ignore[call-arg]
        except ValidationError as exc:
            first = exc.errors()[0]
            cause = first.get("ctx", {}).get("error")
            if isinstance(cause, ConfigError):
                raise cause from None
            raise ConfigError(f"Neo4j setting {first['loc'][0]}: {first['msg']}") from None

    def require_password(self) -> str:
        """The password, or a one-line error saying where to set it."""
        if self.password is None:
            raise ConfigError(
                "NEO4J_PASSWORD is not set: export it or put it in a file named by --env-file"
            )
        return self.password.get_secret_value()


URI_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


def check_uri(uri: str) -> None:
    """A URI Neo4j's driver speaks: one of its schemes and a host. The message shows the URI
    without any user:password part."""
    shown = display_uri(uri)
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() not in URI_SCHEMES:
        got = f"scheme {scheme}://" if sep else "no scheme"
        raise ConfigError(
            f"NEO4J_URI {shown!r}: {got}; expected {'://, '.join(URI_SCHEMES)}:// "
            f"followed by a host, e.g. {DEFAULT_URI}"
        )
    if "@" in rest.split("/")[0]:
        raise ConfigError(
            f"NEO4J_URI {shown!r}: holds a user name or password; give them in NEO4J_USERNAME "
            "and NEO4J_PASSWORD instead"
        )
    host = rest.split("/")[0].split("?")[0]
    if not host or host.startswith(":"):
        raise ConfigError(f"NEO4J_URI {shown!r}: no host; expected e.g. {DEFAULT_URI}")
    problem = url_port_problem(uri)
    if problem:
        raise ConfigError(f"NEO4J_URI {shown!r}: {problem}; expected e.g. {DEFAULT_URI}")


def display_uri(uri: str) -> str:
    """The URI with any user:password@ part dropped, cut to 100 characters."""
    scheme, sep, rest = uri.partition("://")
    shown = f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else uri
    return shown if len(shown) <= 100 else shown[:97] + "..."


MAX_ENV_FILE_BYTES = 1 << 20  # a dotenv file of a few settings is well under a kilobyte


def check_env_file(path: Path) -> None:
    """A dotenv file that exists, is UTF-8 text and at most 1 MiB (read no further, so a
    device such as /dev/zero stops at once); the message never shows its contents."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_ENV_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"--env-file {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"--env-file {path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_ENV_FILE_BYTES:
        raise ConfigError(
            f"--env-file {path}: larger than {MAX_ENV_FILE_BYTES:,} bytes; expected a dotenv "
            "file of NAME=value lines"
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"--env-file {path}: not UTF-8 text (a dotenv file of NAME=value lines)"
        ) from None
    if b"\x00" in data:
        raise ConfigError(f"--env-file {path}: binary file (a NUL byte); expected NAME=value lines")


def open_driver(
    settings: Neo4jSettings, verify: bool = True, retry_seconds: float = 30.0
) -> neo4j.Driver:
    """A driver for `settings`; with `verify`, fail now (one clear line) if Neo4j can't be used.

    Managed transactions (`execute_read`/`execute_write`) are retried on transient errors
    (deadlocks, a leader switch, a restarting server) for up to `retry_seconds`.
    """
    check_uri(settings.uri)  # settings built in code skip the validator's message
    try:
        driver = neo4j.GraphDatabase.driver(
            settings.uri,
            auth=(settings.username, settings.require_password()),
            max_transaction_retry_time=retry_seconds,
            # Server notifications (e.g. "property key does not exist" on a fresh store) are
            # advice for humans writing queries, not for a batch job's log.
            notifications_min_severity="OFF",
        )
    except (neo4j_errors.ConfigurationError, ValueError) as exc:
        raise ConfigError(
            f"NEO4J_URI {display_uri(settings.uri)!r}: "
            f"{_first_line(str(exc)).split(' Given URI:')[0]}"
        ) from None
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
def translate_errors(
    settings: Neo4jSettings | None = None, where: str | None = None
) -> Iterator[None]:
    """Turn the driver's exceptions into the project's, each with the cause and the fix;
    messages name the server by `settings`' URI, or `where`."""
    where = display_uri(settings.uri) if settings else display_uri(where or "the store")
    try:
        yield
    except neo4j_errors.AuthError as exc:
        raise StoreUnavailableError(
            f"{where} refused the credentials: check NEO4J_USERNAME / NEO4J_PASSWORD"
        ) from exc
    except neo4j_errors.ConstraintError as exc:
        raise ConstraintViolationError(f"constraint violated: {_first_line(exc.message)}") from exc
    except (neo4j_errors.ServiceUnavailable, neo4j_errors.SessionExpired, OSError) as exc:
        raise StoreUnavailableError(_unavailable(where, exc)) from exc
    except neo4j_errors.ConfigurationError as exc:
        raise ConfigError(f"Neo4j configuration: {_first_line(str(exc))}") from exc
    except neo4j_errors.ClientError as exc:
        raise SchemaError(f"Neo4j rejected the statement: {_first_line(exc.message)}") from exc
    except (neo4j_errors.TransientError, neo4j_errors.DatabaseError) as exc:
        if exc.code == MEMORY_CODE:  # retried in vain: the write is too large for this server
            raise memory_error(where, exc) from None
        # Retries ran out (deadlocks, a database still starting) or the server failed.
        raise StoreUnavailableError(f"{where}: {_first_line(exc.message)}") from exc
    except (neo4j_errors.Neo4jError, neo4j_errors.DriverError) as exc:
        raise StoreUnavailableError(f"{where}: {_first_line(str(exc))}") from exc


MEMORY_CODE = "Neo.TransientError.General.MemoryPoolOutOfMemoryError"


def memory_error(where: str, exc: neo4j_errors.Neo4jError) -> TransactionMemoryError:
    """The server's "out of transaction memory", as one line with the fix."""
    return TransactionMemoryError(
        f"{where} refused a write that needs more transaction memory than it allows "
        f"({_first_line(exc.message)}): restart it with a larger heap "
        "(`circuitstore server start --heap 4g`), or store less per prompt (--max-edges)"
    )


def _unavailable(where: str, exc: BaseException) -> str:
    """Why a server could not be used, from the driver's own words: a TLS mismatch, an HTTP
    port given for Bolt, or nothing listening."""
    text = _all_messages(exc)
    if "SSL" in text or "BoltSecurityError" in text:
        return (
            f"TLS with {where} failed: the server does not offer TLS there, or its certificate "
            "is not trusted (bolt:// and neo4j:// connect without TLS, +s and +ssc with it)"
        )
    if "looks like HTTP" in text:
        return f"{where} answers HTTP, not Bolt: use the Bolt port (7687 by default)"
    return (
        f"cannot reach Neo4j at {where}: start it with `circuitstore server start` "
        "or point NEO4J_URI at a running server"
    )


def _all_messages(exc: BaseException) -> str:
    """The exception's text with its causes' and grouped exceptions' (routing wraps them)."""
    parts, seen = [], set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        parts.append(f"{type(e).__name__}: {e}")
        stack += [c for c in (e.__cause__, e.__context__) if c is not None]
        stack += list(getattr(e, "exceptions", ()))
    return "\n".join(parts)


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else "no details"
