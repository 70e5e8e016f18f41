"""Helpers the tests share, so that no test module imports another (issue 17 item 4)."""
