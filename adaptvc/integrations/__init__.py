"""Integrations with the world around an adapter: git (code provenance, hooks) and training loops."""
