"""I/O edges: TLS contexts, DNS, the SMTP server and client."""
