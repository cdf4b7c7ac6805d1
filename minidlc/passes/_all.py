"""Imports every pass module so each registers itself with the manager."""
