"""The heads question: which attention heads carry a prompt's stored weight, and how an edge's
weight splits by head."""
