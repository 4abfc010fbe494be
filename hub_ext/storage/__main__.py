"""``python -m hub_ext.storage``: the purge command the storage timer runs."""

from hub_ext.storage.volumes import main

raise SystemExit(main())
