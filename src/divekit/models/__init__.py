"""Models, one file each, registered by name (``divekit list`` shows them)."""
