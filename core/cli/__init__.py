"""The ``igrun`` launcher."""
