"""One Ray token for every cluster the tests of a process start: a driver process keeps the first
token it reads, so clusters with different tokens could not be joined one after another."""
import secrets

RAY_TOKEN = secrets.token_hex(32)
