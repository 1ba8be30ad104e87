"""Runs described in a TOML file, and their checking."""
