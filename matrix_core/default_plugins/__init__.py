"""Built-in components, registered through the public hooks exactly like third-party plugins."""
