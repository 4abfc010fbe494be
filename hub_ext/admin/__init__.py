"""Admin pages that belong to no other feature: settings, health."""
