"""The reference image recognition service built on amulet_native (see app.py)."""
