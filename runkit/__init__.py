"""Run plumbing shared by every command-line tool: run directories, config loading, run files, the CLI helper.

Modules:

* :mod:`runkit.run_dir` -- :func:`~runkit.run_dir.make_run_dir`: one directory per invocation (with provenance).
* :mod:`runkit.config` -- :func:`~runkit.config.load_config`: a dataclass config from ``--config`` YAML and flags.
* :mod:`runkit.files` -- atomic JSON/YAML writes, crash-safe JSONL, secret redaction.
* :mod:`runkit.provenance` -- ``provenance.json``: code version, packages, machine, dtype, LM usage.
* :mod:`runkit.cli` -- :func:`~runkit.cli.run_cli`, the shared ``main()`` of the tools.
* :mod:`runkit.study` -- Optuna plumbing shared by ``compile.study`` and ``finetune.study``.

It sits above the ground floor (``careers``, ``lms``, ``signatures``) and below ``programs``, so every tool can use it.
"""
