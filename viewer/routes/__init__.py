"""The viewer's HTTP routes, one module per concern."""
