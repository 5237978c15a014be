"""The ``emanet`` subcommands, one module per group; each module's ``register`` adds its parsers."""
