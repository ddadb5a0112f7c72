"""Pipelines used by the tests only: every stage and the contract suite must handle them as they handle fraud."""
