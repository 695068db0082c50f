"""circuitstore: a Neo4j-backed store of transcoder attribution graphs.

Layers, lowest first: ``circuitstore.schema`` (errors, graph model, the grammar of names and
node kinds, Cypher DDL, connection), ``circuitstore.ingest`` (configs, model, transcoders,
attribution, writing) and ``circuitstore.query`` (reads; never imports torch). The application
layer sits on top of them: ``circuitstore.cli`` and ``circuitstore.commands`` (the only users of
click) and ``circuitstore.server`` (a local Neo4j).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("circuitstore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
