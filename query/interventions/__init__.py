"""The interventions question: what `circuitstore verify` stored about removing or scaling a
prompt's features, by feature or by prompt."""
