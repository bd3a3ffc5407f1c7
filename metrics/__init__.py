"""Accuracy metrics (AccEM, AccRM, Acc@k, MRR, SOC-group accuracy) and the LLM judge."""
