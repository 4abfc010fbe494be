"""The lab's systemd units: properties of the transient service and socket, readiness."""
