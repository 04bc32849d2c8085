"""Data shipped with speechqe: scoring suites (``suites/*.yaml``), the demo speech set."""
