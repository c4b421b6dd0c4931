"""The archive: call metadata in PostgreSQL, recordings as files."""
