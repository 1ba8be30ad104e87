"""The containers of this host: the collection, its discovery and the start hold."""
