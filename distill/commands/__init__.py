"""`distill` subcommands, one module a command; :data:`distill.cli.COMMANDS` lists them."""
