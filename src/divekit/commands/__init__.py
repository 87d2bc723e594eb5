"""Extra ``divekit`` subcommands, one module each (e.g. ``sample``, ``translate``).

A module here defines ``register(subparsers)``, which adds its parser and sets
``handler=run`` with ``run(args) -> int``. The command line discovers the modules, so a chapter adds a
command without editing ``cli.py``. Raise :class:`divekit.errors.DivekitError` for user mistakes.
"""
