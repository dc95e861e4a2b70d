"""``python -m amulet_service``: serve the API (PORT, WEB_CONCURRENCY workers)."""

from .app import main

main()
