"""A small GPT-2-architecture model with planted circuits, its transcoders and its corpus.

:mod:`~demo.make.corpus` generates the text (indirect objects, year spans,
induction, filler) from a seed; :mod:`~demo.make.train` trains the tokenizer,
the model and one transcoder per layer and measures their fidelity;
:mod:`~demo.make` is the command that rebuilds the shipped artifacts
(``circuitstore/demo/weights``, ``circuitstore/demo/corpus.jsonl``, package data of
:mod:`circuitstore.demo`) and checks a rebuild against them.
"""
