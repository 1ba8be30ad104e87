"""Encoders: whole batches written as columns or JSON lines, by C."""
