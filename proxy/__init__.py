"""pullgate: a registry proxy that serves only images whose tags are signed."""

__version__ = "0.1.0"
