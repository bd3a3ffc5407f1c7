"""DSPy signatures of the reasoned next-occupation method (issue 4)."""
