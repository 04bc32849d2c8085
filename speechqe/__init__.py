"""speechqe: speech quality and speech synthesis evaluation."""

__version__ = "0.1.0"
