"""Transcoders: the per-layer (or cross-layer) sparse replacements of a model's MLPs, their files
and their checks.

Public API: :class:`Transcoder`, :class:`TranscoderSet`, :func:`load_transcoders` (a local folder
or a HuggingFace repo id, in any layout of :data:`LAYOUTS`: circuit-tracer's per-layer and
cross-layer layouts, Gemma Scope's npz files, the published GPT-2 pickles, our safetensors),
:func:`validate_against` (layer count, hook points, widths, cross-layer decoders against a model),
and :func:`save_transcoders`, which writes a set in any layout (the synthetic test sets).
"""

from circuitstore.ingest.transcoder.files import save_published, save_safetensors
from circuitstore.ingest.transcoder.layouts import (
    LAYOUTS,
    Layout,
    load_transcoders,
    save_transcoders,
)
from circuitstore.ingest.transcoder.types import Transcoder, TranscoderSet, expected_hook_point
from circuitstore.ingest.transcoder.validate import validate_against

__all__ = [
    "LAYOUTS",
    "Layout",
    "Transcoder",
    "TranscoderSet",
    "expected_hook_point",
    "load_transcoders",
    "save_published",
    "save_safetensors",
    "save_transcoders",
    "validate_against",
]
