"""Distillation of oracle traces into a small model with TRL + PEFT; Optuna studies (issue 6)."""
