"""The fault matrix of issue #9: faults injected into real runs over the real services (README.md)."""
