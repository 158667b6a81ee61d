"""Subcommands of the mhc-export command line (see mhc_export.cli)."""
