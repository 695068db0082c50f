"""Why a head attends where it does: QK traces of attention scores into the graph's nodes."""
