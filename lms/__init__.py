"""In-process local LMs for DSPy: the embedded default model and the local engine (issue 3)."""
