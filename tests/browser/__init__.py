"""Browser tests: the web console in real headless Chromium against the real stack."""
