"""circuitstore: a Neo4j-backed store of transcoder attribution graphs.

Layers, lowest first: ``circuitstore.schema`` (graph model, Cypher DDL, connection),
``circuitstore.ingest`` (model, transcoders, attribution, writing) and ``circuitstore.query``
(reads; never imports torch). ``circuitstore.cli`` sits on top of all of them.
"""

import os
from importlib.metadata import PackageNotFoundError, version

# OpenMP threads that spin while waiting for work burn the CPU other processes need, and on a
# loaded 2-core machine the engine crawls: 20 tiny prompts took 39.5 s with the default policy,
# 3.1 s with one thread and 0.42 s with passive waiting (same run, load average ~12). It must be
# set before torch starts its OpenMP runtime, i.e. before torch is imported; a user's own
# setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("circuitstore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
