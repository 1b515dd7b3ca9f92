"""validation tier."""
