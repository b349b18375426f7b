"""The REST API (HTTPS, JSON, OAuth 2): send, status, preflight, domains, suppressions,
webhooks. OpenAPI 3.1 at /openapi.json, interactive docs at /docs."""
