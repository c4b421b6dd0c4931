"""ARI transport: our own asyncio client for Asterisk's REST Interface (REST + events).

`client.AriClient` does the I/O, `models` and `events` hold the decoded objects, `errors` the
typed failures. No call logic lives here.
"""
