"""Textual inversion (Gal et al. 2022) of a text-to-image model on a captioned image folder, through the one Trainer.

    finetune_tokens("shapes-latent-t2i", "zorps/", "zorp.safetensors", words=["zorp"], init=["triangle"])

The captions name the concept with the new word ("a big zorp in the top left"); the run is the base's config with
the folder as data and train.tokens = {words, init}: the Trainer freezes every weight and learns only the new
words' embeddings (imgen.nn.textual_inversion), in ADAPTER.run/ (a rerun resumes). The embeddings (EMA) go to
ADAPTER, their words and base to ADAPTER.json. Use: model.load_tokens(ADAPTER), or
`imgen generate "a small zorp on the left" --embedding ADAPTER`.
"""
from __future__ import annotations

from pathlib import Path

from imgen.errors import ImgenError
from imgen.nn.textual_inversion import check_words, save_tokens
from imgen.recipes.lora import base_name, finetune, finetune_config, run_dir


def finetune_tokens(base: str | Path, data: str | Path, out: str | Path, words, init=None, steps: int = 400,
                    lr: float = 5e-3, batch_size: int = 16, seed: int = 0, progress: bool = True) -> dict:
    """Learn the embeddings of the new `words` (initialised from the known `init` words) from the folder `data`;
    write them to `out`. -> a summary dict."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ImgenError(f"--out {str(out)!r} must be a .safetensors file path (the learned words); e.g. "
                         f"zorp.safetensors")
    words = check_words(words)
    init = None if init is None else ([init] if isinstance(init, str) else list(init))
    tokens = {"words": words} if init is None else {"words": words, "init": init}
    trainer, result = finetune(finetune_config(base, data, steps, lr, batch_size, seed, tokens=tokens), data, out,
                               progress)
    meta = {"kind": "textual_inversion", "base": base_name(base), "words": words, "init": init,
            "steps": trainer.step, "data": str(Path(data).resolve())}
    save_tokens(trainer.ema, out, meta)
    return {**result, "adapter": str(out), "adapter_bytes": out.stat().st_size, "run": str(run_dir(out))}
