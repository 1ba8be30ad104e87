"""Bare objects (``igrun run FILE.bpf.o``): a gadget made from what the object declares."""
