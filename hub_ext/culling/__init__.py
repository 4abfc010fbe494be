"""Idle culling with user extensions (the Session Status card)."""
