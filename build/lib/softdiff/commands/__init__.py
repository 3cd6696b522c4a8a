"""The application-level commands that join the core with the studies (the core imports nothing from here)."""
