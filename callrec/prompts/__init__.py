"""Prompts: recorded or synthesised announcements, versioned by their audio."""
