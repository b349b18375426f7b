"""Metadata: accounts, domains, credentials, messages, recipients, events, attempts."""
