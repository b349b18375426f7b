"""The stages shipped with Secumail (entry points in group `secumail.stages`)."""
