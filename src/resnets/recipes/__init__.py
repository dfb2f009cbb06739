"""Training recipes as TOML data files (one comment per field)."""
