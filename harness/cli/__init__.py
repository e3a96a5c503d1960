"""The ``nerva-consistency`` command: its parser, the whole-command input checks and one function per command."""
