"""What every platform handler shares: client address, user resources, scope checks."""
