"""core tier."""
