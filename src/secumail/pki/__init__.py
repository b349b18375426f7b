"""Keys and secrets: credential hashing today; Secumail's CA and evidence signing later."""
