"""`circuitstore view`: a read-only local web app over the store (docs/view.md)."""
