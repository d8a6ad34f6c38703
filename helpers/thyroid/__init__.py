"""Thyroid ultrasound: the index, the generated set, and the track of notebooks 16-17."""
