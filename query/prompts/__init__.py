"""The prompts question: which prompts the store holds, one prompt with its scores, and the
prompts whose graphs hold given features."""
