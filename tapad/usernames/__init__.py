"""User names for load tests: fetched from a web source or generated offline."""
