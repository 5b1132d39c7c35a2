"""Built-in device profiles (YAML data files; the file stem is the device name)."""
