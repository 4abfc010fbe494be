"""Per-user storage: directory layout, reset into the trash, restore, archive, purge, sizes."""
