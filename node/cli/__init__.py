"""The `perpchain` command line: node lifecycle, keys, transactions and queries."""
