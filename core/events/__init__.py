"""Events as Python sees them: schemas, shared field groups and conversions."""
