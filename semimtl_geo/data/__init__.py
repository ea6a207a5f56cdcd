"""Datasets, samplers, ISPRS preparation and synthetic archives."""
