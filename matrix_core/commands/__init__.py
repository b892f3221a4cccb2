"""The ``matrix`` subcommands, each imported only when invoked."""
