"""A small GPT-2-architecture model with planted circuits, its transcoders and its corpus.

:mod:`~circuitstore.ingest.demo.corpus` generates the text (indirect objects, year spans,
induction, filler) from a seed; :mod:`~circuitstore.ingest.demo.train` trains the tokenizer,
the model and one transcoder per layer and measures their fidelity;
:mod:`~circuitstore.ingest.demo.build` is the command that rebuilds the shipped artifacts
(``demo/weights``, ``demo/corpus.jsonl``) and checks a rebuild against them.
"""
