"""Executors run a job's bash script on a host as a detached process group with log, pid and rc files."""
