"""Pure formats and rules: no I/O, no asyncio, no imports from the rest of Secumail."""
