"""Keyplane: self-hosted API key management."""

__version__ = "0.1.0"
