"""The one exception type imgen raises for bad input: its message names the problem and the fix."""
import numbers


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


def check_int(value, name: str, minimum: int = 1, hint: str = ""):
    """`value` if it is an integer >= `minimum` (bools are not integers here), else one ImgenError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ImgenError(f"{name} must be an integer >= {minimum}, got {value!r}{hint}")
    return value


def check_nonnegative(value, name: str, hint: str = "") -> float:
    """float(`value`) if it is a real number >= 0 (bools are not numbers here), else one ImgenError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ImgenError(f"{name} must be a number >= 0{hint}, got {value!r}")
    return float(value)
