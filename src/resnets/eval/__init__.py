"""Evaluation: error metrics and test protocols."""
