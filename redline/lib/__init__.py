"""Helpers that know nothing of Redline's domain: environment parsing, health probes."""
