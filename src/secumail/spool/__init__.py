"""Encrypted message bodies and their keys; bodies never touch disk in plaintext."""
