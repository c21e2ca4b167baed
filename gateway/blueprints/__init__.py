"""Blueprints: the zip archives that describe devices, and their manifests."""
