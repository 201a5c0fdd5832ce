"""The write path: uploads and their parts, the memory budget, the spool, parts sent again,
new versions of random writes, and the registry of this mount's uploads.
Imports `s3/` and the bottom modules (`errors`, `objects`, `config`), never `fs/` or `run/`."""
