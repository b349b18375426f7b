"""secumail-bsn-guard: a Secumail stage plug-in that keeps BSNs inside the organisation."""
