"""Carbon-aware multi-region scheduler for Kubernetes."""

__version__ = "0.1.0"
