"""Ingestion: model and transcoder loading, attribution graphs, and writing them to Neo4j."""
