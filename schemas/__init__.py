"""Event and catalog record shapes: the only place they are defined."""
