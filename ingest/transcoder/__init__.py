"""Transcoders: the per-layer sparse replacements of GPT-2's MLPs, their files and their checks.

Public API: :class:`Transcoder`, :class:`TranscoderSet`, :func:`load_transcoders` (a local folder or
a HuggingFace repo id, published pickle layout or the safetensors layout), :func:`validate_against`
(layer count, hook points, shapes, dtypes, finiteness against a model), and the writers used by the
synthetic test models (:func:`save_published`, :func:`save_safetensors`).
"""

from circuitstore.ingest.transcoder.files import save_published, save_safetensors
from circuitstore.ingest.transcoder.loader import load_transcoders
from circuitstore.ingest.transcoder.types import Transcoder, TranscoderSet, expected_hook_point
from circuitstore.ingest.transcoder.validate import validate_against

__all__ = [
    "Transcoder",
    "TranscoderSet",
    "expected_hook_point",
    "load_transcoders",
    "save_published",
    "save_safetensors",
    "validate_against",
]
