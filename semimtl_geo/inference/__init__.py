"""Sliding-window inference and georeferenced writers (GeoTIFF/COG, QML, vectors)."""
