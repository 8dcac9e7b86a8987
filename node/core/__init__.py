"""PURE core: records, canonical codec, hashing rules and the exchange state machine.

Nothing here does I/O, reads a clock, draws randomness, logs or starts threads; the same bytes in
give the same bytes out on any machine (tests/test_layering.py enforces the imports).
"""
