"""Judge-driven prompt optimization, oracle reason selection, export of traces."""
