"""The spo-async test suite."""
