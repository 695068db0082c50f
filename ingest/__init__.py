"""Ingestion: model and transcoder loading, attribution graphs, and writing them to Neo4j."""

import os

# OpenMP threads that spin while waiting for work burn the CPU other processes need, and on a
# loaded 2-core machine the engine crawls: 20 tiny prompts took 39.5 s with the default policy,
# 3.1 s with one thread and 0.42 s with passive waiting (same run, load average ~12). It must be
# set before torch starts its OpenMP runtime, i.e. before torch is imported; a user's own
# setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
