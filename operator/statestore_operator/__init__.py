"""A kopf operator that validates state store Components and rolls out their state APIs."""

__version__ = "0.1.0"
