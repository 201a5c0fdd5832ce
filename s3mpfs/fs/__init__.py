"""The filesystem: pyfuse3 operations, the namespace (names, inodes, directories), open
files and attribute writes. Imports `write/`, `s3/` and the bottom modules, never `run/`."""
