"""`distill` subcommands, discovered by :mod:`distill.cli` (one module a command)."""
