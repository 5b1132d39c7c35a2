"""Built-in search spaces (YAML data files; the file stem is the space name)."""
