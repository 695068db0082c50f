"""Parquet parts: `ingest --parts` writes them instead of Neo4j transactions, and `circuitstore
load` turns a folder of them into a store with Neo4j's bulk importer (see `format`)."""
