"""Experiments, one file each, registered by name and run by ``divekit run NAME`` or ``divekit tour``."""
