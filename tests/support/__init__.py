"""Helpers shared by the tests: services the tests start (Redis, SMTP), databases, processes, forms.

Tests import from here, never from a conftest; the conftests only turn these into fixtures.
"""
