"""Interventions: check a stored graph against the model it describes (`circuitstore verify`)."""
