"""The BPF layer: open, load and attach objects, pin their maps, read their buffers."""
