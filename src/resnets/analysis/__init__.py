"""Analyses of trained nets and their runs (curves, layer responses)."""
