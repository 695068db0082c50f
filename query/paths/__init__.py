"""The paths question: one prompt's stored graph, the strongest paths into a logit or feature,
and the circuit that carries most of the influence on it."""
