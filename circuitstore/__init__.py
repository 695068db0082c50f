"""circuitstore: a Neo4j-backed store of transcoder attribution graphs.

Layers, lowest first: ``circuitstore.schema`` (graph model, Cypher DDL, connection),
``circuitstore.ingest`` (model, transcoders, attribution, writing) and ``circuitstore.query``
(reads; never imports torch). ``circuitstore.cli`` sits on top of all of them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("circuitstore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
