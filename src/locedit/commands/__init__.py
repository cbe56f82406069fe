"""CLI command implementations, one module per group of commands (registered by locedit.cli)."""
