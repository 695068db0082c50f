"""One root exception and specific subclasses.

Library code raises these with a message that is already fit for a user: one line naming the
thing at fault (file, line, value, allowed range) and, where there is one, the fix. Only the CLI
turns them into an exit status.
"""


class CircuitStoreError(Exception):
    """Root of every error this project raises on purpose."""

    exit_code = 1


class ConfigError(CircuitStoreError):
    """A setting or option is missing or out of range."""

    exit_code = 2


class TransactionMemoryError(ConfigError):
    """A write needs more transaction memory than the Neo4j server allows; the fix is a larger
    heap there (or a smaller graph budget here)."""


class InputError(CircuitStoreError):
    """A user-supplied file, prompt or name cannot be used as given."""

    exit_code = 2


class ServerError(CircuitStoreError):
    """The local Neo4j server could not be assembled, started or stopped."""


class StoreUnavailableError(CircuitStoreError):
    """Neo4j could not be reached, or refused the credentials."""


class SchemaError(CircuitStoreError):
    """The database schema is missing, out of date, or a constraint was violated."""


class ConstraintViolationError(SchemaError):
    """A write broke a uniqueness or existence constraint."""


class ModelLoadError(InputError):
    """A language model could not be loaded or does not fit the transcoders."""


class TranscoderLoadError(InputError):
    """A transcoder file is missing, malformed, or does not fit the model."""


class CatalogError(CircuitStoreError):
    """The SQL run catalog cannot be opened or written."""


class QueryError(CircuitStoreError):
    """A query cannot be answered as asked (unknown feature, prompt, malformed name)."""

    exit_code = 2


class NotFoundError(QueryError):
    """A well-formed name (a prompt key, a feature, a node, a transcoder set) that the store
    does not hold: the viewer answers 404 for it, 400 for other query errors."""
