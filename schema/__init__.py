"""Graph model, Cypher DDL and the Neo4j connection: the layer below ingest and query."""
