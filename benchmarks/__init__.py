"""Benchmarks: each compares our code path with a plain baseline in one run and writes JSON."""
