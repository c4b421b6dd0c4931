"""Routing: which agents answer which service number, and how they are rung."""
