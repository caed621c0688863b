"""The private parts of third-party libraries that tapad relies on, one module per library.

Nothing else in tapad touches a library's private attributes: when a release changes them,
the module here and its test in ``tests/adapters/`` are the only places to look, and that
test fails naming the library's version.
"""
