"""Experiments: the paper-claims table, with bootstrap CIs and plots."""
