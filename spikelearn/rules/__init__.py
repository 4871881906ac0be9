"""Learning rules."""
