"""Command-line interface of semimtl-geo (installed as ``semimtl_geo.cli``)."""
