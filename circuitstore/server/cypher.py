"""The Cypher the local-server tooling runs (`circuitstore load`)."""

from __future__ import annotations

from circuitstore.schema.model import Label as L

# Whether the database holds anything beyond the schema's version record.
HOLDS_DATA = f"MATCH (n) WHERE NOT n:{L.SCHEMA_VERSION} RETURN count(n) > 0 AS held LIMIT 1"
