"""Managers' quality pages: dashboard, adjudication, gold answers."""
