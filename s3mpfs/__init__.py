"""s3mpfs: mount an S3 bucket and stream every file written into it as a multipart upload."""

__version__ = "0.1.0"
