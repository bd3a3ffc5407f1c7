"""DSPy modules: the two-step program and LM-free baselines."""
