"""A local Neo4j Community server assembled from Maven Central, run without Docker."""
