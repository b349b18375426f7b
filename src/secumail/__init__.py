"""Secumail: a secure email gateway. Every hop encrypted and authenticated, or no delivery."""

__version__ = "0.1.0"
