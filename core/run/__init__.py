"""Running gadgets: one run on this host, several from a config, bare objects."""
