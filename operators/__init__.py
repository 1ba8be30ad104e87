"""igrun's built-in operators: filter, sort, limit and output.

Each module registers its operator through the ``igrun.operators`` entry point, exactly as a
third-party operator would.
"""
