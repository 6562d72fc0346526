"""One module per ``srnas`` subcommand; each defines ``register(subparsers)``."""
