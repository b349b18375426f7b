"""Keys and secrets: Secumail's S/MIME CA, evidence signing, DKIM keys, credential hashing, HSM."""
