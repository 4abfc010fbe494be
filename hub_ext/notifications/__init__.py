"""Admin broadcast notifications to running labs."""
