"""`/v1/readers`: the reader registry over HTTP (router / protocol / service)."""
