"""``python -m jex`` runs the CLI."""

from jex.cli.main import entry

entry()
