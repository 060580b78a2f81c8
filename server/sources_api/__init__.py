"""`/v1/sources` and `/v1/jobs`: sources a tenant syncs its collections from, and their jobs."""
