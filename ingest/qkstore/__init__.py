"""QK traces into the store: (:QKTrace) nodes linked to their prompt and to the graph nodes
they name (`circuitstore qk --store`, `ingest --qk-top`)."""
