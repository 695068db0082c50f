"""Queries over the store. Never imports torch: it must stay light enough for any client."""
