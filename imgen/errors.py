"""The one exception type imgen raises for bad input: its message names the problem and the fix."""


class ImgenError(Exception):
    """Bad input or state a user can fix. The CLI prints it as one line, without a traceback."""


def build(registry: dict, kind: str, name: str, **kwargs):
    """registry[name](**kwargs), with one clear error for an unknown name (listing the valid ones) or bad options."""
    if name not in registry:
        raise ImgenError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(registry))}")
    try:
        return registry[name](**kwargs)
    except TypeError as e:
        raise ImgenError(f"bad options for {kind} {name!r}: {e}; see {registry[name].__module__.replace('.', '/')}.py") from None
