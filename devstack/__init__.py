"""The local stack for development, tests and CI: Asterisk 22 in a Debian sid root,
a private PostgreSQL cluster, SIPp peers and the callrec service.

Not part of the product a clinic deploys."""
