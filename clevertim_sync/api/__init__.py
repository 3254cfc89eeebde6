"""The Clevertim API adapter: `client.ClevertimClient` and the typed errors in `errors`."""
