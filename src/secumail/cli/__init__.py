"""The `secumail` command."""
