"""A tiny library the hello service depends on."""


def greet(name: str) -> str:
    return f"Hello, {name}!"
