"""Tiny random LTX-Video checkpoints in the official format, for tests and the offline demo."""
