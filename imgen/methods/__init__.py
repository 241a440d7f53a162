"""Generator families: each owns a training loss and a way to sample. Networks stay in imgen.nn."""
from imgen.errors import ImgenError
from imgen.methods.diffusion import ddpm
from imgen.methods.edm import edm
from imgen.methods.flow_matching import flow_matching
from imgen.methods.score import ncsn

METHODS = {"ddpm": ddpm, "flow_matching": flow_matching, "ncsn": ncsn, "edm": edm}


def build_method(name: str, **kwargs):
    if name not in METHODS:
        raise ImgenError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    try:
        return METHODS[name](**kwargs)
    except TypeError as e:
        raise ImgenError(f"bad options for method {name!r}: {e}; see imgen/methods/{METHODS[name].__module__.rsplit('.', 1)[-1]}.py") from None
