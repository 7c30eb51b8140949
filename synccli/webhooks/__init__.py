"""Receiving the changes providers push (#23): verify, store once, answer fast."""
