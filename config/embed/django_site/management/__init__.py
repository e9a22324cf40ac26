"""Management commands of the Django recipe."""
