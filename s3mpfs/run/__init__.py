"""Running a mount: the control socket, `s3mpfs status`, Prometheus metrics and the
maintenance commands (leftover uploads). Imports `write/`, `s3/` and the bottom modules,
never `fs/`."""
