"""Runnable examples; importable so Ray workers can load their tools by module path."""
