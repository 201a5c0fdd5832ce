"""Talking to S3: the boto3 store and its awscrt route, request parameters, checksums,
copies, ranged reads, the object-metadata codec and the request counters.
Imports only `errors`, `objects` and `config`."""
