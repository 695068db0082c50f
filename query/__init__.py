"""Queries over the store. Never imports torch: it must stay light enough for any client."""

from circuitstore.query.store import CircuitStore

__all__ = ["CircuitStore"]
