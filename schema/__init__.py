"""The ground floor, importing nothing else of ours: the errors, the graph model, the one grammar
of names and node kinds, Cypher DDL, connection settings and the data folder."""
