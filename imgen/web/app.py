"""`imgen serve`: a gradio page over imgen models. Tabs: text-to-image and the image-to-image applications of a text
model (img2img, inpainting with a mask drawn on the image, prompt-to-prompt editing; imgen.apps), sampling (a
class-conditional or unconditional model), latent interpolation (an autoencoder or VAE; imgen.apps.latent), each
present only when a model of its kind is served. Offline: no analytics, no share tunnel, fonts and scripts from the gradio package
itself; 127.0.0.1 unless told. Bounded by imgen.web.limits.Limits (queue, n, steps, prompt, uploads).

Every image is a PNG whose text chunk "imgen" holds its settings as JSON (model, prompt, sampler, steps, seed ...).
"""
from __future__ import annotations

import html
import inspect
import json
import os
import socket
import threading
import warnings

import numpy as np
import torch

from imgen import __version__
from imgen.errors import ImgenError
from imgen.web.limits import Limits, check_count, check_prompt, check_seed, read_upload

# Set before gradio is imported: no telemetry, no version check, no hub look-ups.
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "GRADIO_SSR_MODE": "False", "GRADIO_SHARE": "False"}
SAMPLERS = ("euler", "heun", "dpmpp_2m", "midpoint", "ddim", "ddpm", "edm", "tcd", "consistency")  # those `imgen
# generate` offers; the last two for a consistency / LCM student (imgen distill), whose default the page selects
GALLERY_BUTTONS = ["download", "download_all", "fullscreen"]  # not "share": it posts to a hub
PIXELATED_CSS = ".imgen-gallery img { image-rendering: pixelated; }"


def _gradio():
    os.environ.update(OFFLINE_ENV)
    try:
        import gradio as gr
    except ImportError:
        raise ImgenError("the web UI needs gradio; install it with `pip install 'imgen[web]'`") from None
    return gr


def model_kinds(model) -> set[str]:
    """The tabs a loaded imgen Model belongs to: "text", "sample" (class-conditional or unconditional images),
    "latent" (an autoencoder or VAE with encode/decode), "upscale" (a super-resolution model: SR3 or SRGAN)."""
    if model.is_text:
        return {"text"}
    if model.is_upsampler:
        return {"upscale"}
    kinds = set()
    images = len(model.shape) == 3
    if images and not model.is_tokenizer and hasattr(model.net, "encode") and hasattr(model.net, "decode"):
        kinds.add("latent")
    elif images and (model.num_classes is not None or hasattr(model.method, "denoiser")
                     or hasattr(model.method, "sample")):
        kinds.add("sample")
    return kinds


def _pngs(x, settings: dict) -> list:
    """(N, C, H, W) in [-1, 1] -> PIL images whose PNG text chunk "imgen" holds the settings and the image index
    (gradio's Gallery(format="png") keeps str entries of img.info as PNG tEXt chunks)."""
    from imgen.images import to_pil

    images = []
    for i, img in enumerate(to_pil(x)):
        img.info["imgen"] = json.dumps({**settings, "index": i, "imgen_version": __version__}, sort_keys=True)
        img.info["Software"] = f"imgen {__version__}"
        images.append((img, f"#{i} seed {settings.get('seed')}"))
    return images


class App:
    """The loaded models and the request handlers (plain methods raising ImgenError; build() wraps them)."""

    def __init__(self, models: dict, limits: Limits = Limits()):
        self.models, self.limits = models, limits
        self.kinds = {name: model_kinds(m) for name, m in models.items()}
        useless = [name for name, k in self.kinds.items() if not k]
        if useless:
            method = models[useless[0]].config.method.name
            raise ImgenError(f"the web UI has no tab for model {useless[0]!r} (method {method}); "
                             "serve a text-to-image, class-conditional, unconditional image, autoencoder or "
                             "super-resolution model")
        self.lock = threading.Lock()  # torch models are not re-entrant: one sampling at a time per process

    def names(self, kind: str) -> list[str]:
        return [name for name, k in self.kinds.items() if kind in k]

    def _model(self, name, kind: str):
        if name not in self.names(kind):
            raise ImgenError(f"unknown model {name!r}; choose one of {', '.join(self.names(kind))}")
        return self.models[name]

    def _sampling(self, steps, seed, sampler):
        lim = self.limits
        steps = check_count(steps, "steps", lim.max_steps)
        if sampler not in SAMPLERS:
            raise ImgenError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        return steps, check_seed(seed)

    def text_to_image(self, model_name, prompt, negative, cfg, steps, sampler, seed, n, progress=None):
        model = self._model(model_name, "text")
        prompt = check_prompt(prompt, "prompt", self.limits)
        negative = check_prompt(negative, "negative prompt", self.limits, required=False)
        n = check_count(n, "number of images", self.limits.max_n)
        steps, seed = self._sampling(steps, seed, sampler)
        cfg = float(cfg)
        with self.lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = model.generate([prompt], n=n, negative=negative, sampler=sampler, steps=steps, cfg=cfg, seed=seed,
                               callback=_step_callback(progress, steps))
        return _pngs(x, {"model": model_name, "prompt": prompt, "negative": negative, "cfg": cfg, "steps": steps,
                         "sampler": sampler, "seed": seed, "n": n})

    def sample(self, model_name, label, cfg, steps, sampler, seed, n, progress=None):
        model = self._model(model_name, "sample")
        n = check_count(n, "number of images", self.limits.max_n)
        steps, seed = self._sampling(steps, seed, sampler)
        labels = None
        if model.num_classes is not None and label not in (None, "", "all"):
            if not str(label).isdigit() or int(label) >= model.num_classes:
                raise ImgenError(f"class label must be 'all' or one of 0..{model.num_classes - 1}, got {label!r}")
            labels = int(label)
        cfg = float(cfg) if model.num_classes is not None else 1.0
        opts = {} if hasattr(model.method, "sample") else {"sampler": sampler, "cfg": cfg}
        with self.lock:
            x = model.sample(n, labels=labels, steps=steps, seed=seed, callback=_step_callback(progress, steps), **opts)
        return _pngs(x, {"model": model_name, "label": labels if labels is not None else "all", "steps": steps,
                         "seed": seed, "n": n, **opts})

    def _image(self, model, file, name: str = "image"):
        from imgen.apps.inputs import pixel_shape

        c, size, _ = pixel_shape(model)
        return read_upload(file, self.limits, c, size, name)

    def img2img(self, model_name, file, prompt, strength, steps, seed, n, progress=None):
        from imgen.apps.img2img import img2img

        model = self._model(model_name, "text")
        prompt = check_prompt(prompt, "prompt", self.limits)
        n = check_count(n, "number of images", self.limits.max_n)
        steps, seed = check_count(steps, "steps", self.limits.max_steps), check_seed(seed)
        x = self._image(model, file)
        with self.lock:
            out = img2img(model, x, prompt, float(strength), n=n, steps=steps, seed=seed)
        return _pngs(out, {"model": model_name, "application": "img2img", "prompt": prompt,
                           "strength": float(strength), "steps": steps, "seed": seed, "n": n})

    def inpaint(self, model_name, editor, prompt, method, seed, n, progress=None):
        """`editor`: gr.ImageEditor's value (numpy): the uploaded image is the background, any stroke drawn on a
        layer marks the hole."""
        from imgen.apps.inpaint import METHODS, inpaint
        from imgen.apps.inputs import pixel_shape
        from imgen.images import from_uint8

        model = self._model(model_name, "text")
        prompt = check_prompt(prompt, "prompt", self.limits)
        n = check_count(n, "number of images", self.limits.max_n)
        seed = check_seed(seed)
        if method not in METHODS:
            raise ImgenError(f"unknown inpainting method {method!r}; choose one of {', '.join(METHODS)}")
        background = None if not editor else editor.get("background")
        if background is None:
            raise ImgenError("no image uploaded; drop a PNG on the editor, then paint the part to redraw")
        c, h, w = pixel_shape(model)
        image = np.asarray(background)
        if image.shape[:2] != (h, w):
            raise ImgenError(f"the image is {image.shape[1]}x{image.shape[0]} but the model makes {w}x{h} images; "
                             f"upload a {w}x{h} image")
        rgb = image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        layers = [np.asarray(layer) for layer in (editor.get("layers") or []) if layer is not None]
        hole = np.zeros((h, w), dtype=bool)
        for layer in layers:
            hole |= (layer[..., 3] > 0) if layer.ndim == 3 and layer.shape[2] == 4 else (layer.reshape(h, w, -1)
                                                                                         .max(-1) > 0)
        if not hole.any():
            raise ImgenError("no hole drawn; paint over the part of the image to redraw with the brush")
        x = from_uint8(rgb[None].astype(np.uint8))
        with self.lock:
            out = inpaint(model, x, torch.from_numpy(hole), prompt, method=method, n=n, seed=seed)
        return _pngs(out, {"model": model_name, "application": "inpaint", "prompt": prompt, "method": method,
                           "seed": seed, "n": n})

    def edit(self, model_name, file, source, target, null_text, progress=None):
        from imgen.apps.edit import edit

        model = self._model(model_name, "text")
        source = check_prompt(source, "source prompt", self.limits)
        target = check_prompt(target, "edited prompt", self.limits)
        x = self._image(model, file)
        with self.lock:
            out = edit(model, x, source, target, null_text=bool(null_text))
        return _pngs(out, {"model": model_name, "application": "edit", "from": source, "to": target,
                           "null_text": bool(null_text), "seed": None})

    def upscale(self, model_name, file, steps, seed, progress=None):
        """The upload, resized to the model's low resolution, upscaled (SR3: `steps` sampler steps from `seed`;
        SRGAN: one generator pass, steps and seed unused)."""
        from imgen.apps.upscale import low_res_shape, upscale

        model = self._model(model_name, "upscale")
        c, size, _ = low_res_shape(model)
        low = read_upload(file, self.limits, c, size, "low-res image")
        one_pass = not hasattr(model.method, "low_res_condition")  # a GAN upsampler
        opts = {} if one_pass else {"steps": check_count(steps, "steps", self.limits.max_steps),
                                    "seed": check_seed(seed)}
        with self.lock:
            out = upscale(model, low, **opts)
        return _pngs(out, {"model": model_name, "application": "upscale", "low_res": size,
                           "size": int(out.shape[-1]), "steps": opts.get("steps"), "seed": opts.get("seed")})

    def interpolate(self, model_name, file_a, file_b, frames, mode, progress=None):
        from imgen.apps.latent import MODES, interpolate

        model = self._model(model_name, "latent")
        frames = check_count(frames, "frames", 16)
        if frames < 2:
            raise ImgenError("frames must be at least 2 (both ends)")
        if mode not in MODES:
            raise ImgenError(f"unknown interpolation mode {mode!r}; choose one of {', '.join(MODES)}")
        c, size = model.shape[0], model.shape[1]
        x_a = read_upload(file_a, self.limits, c, size, "image A")
        x_b = read_upload(file_b, self.limits, c, size, "image B")
        with self.lock:
            x = interpolate(model, x_a, x_b, steps=frames, mode=mode)
        return _pngs(x, {"model": model_name, "application": "latent interpolation", "frames": frames, "mode": mode,
                         "seed": None})


def _step_callback(progress, steps: int):
    """A sampler callback that moves gradio's progress bar once per step."""
    if progress is None:
        return None
    progress((0, steps), desc="sampling", unit="steps")
    return lambda info: progress((min(info["i"] + 1, steps), steps), desc="sampling", unit="steps")


def _in_page(fn):
    """Run a handler; bad input (ImgenError) becomes a gr.Error: a message in the page, the server keeps serving."""
    gr = _gradio()

    def wrapped(*args):  # gradio passes the inputs, then its Progress tracker in the `progress` slot
        try:
            return fn(*args)
        except ImgenError as e:
            raise gr.Error(html.escape(str(e), quote=False), print_exception=False) from None  # shown as HTML
    sig = inspect.signature(fn)
    wrapped.__signature__ = sig.replace(parameters=[p.replace(default=gr.Progress()) if p.name == "progress" else p
                                                    for p in sig.parameters.values()])
    wrapped.__name__ = fn.__name__
    return wrapped


def build(app: App):
    """The gradio Blocks of `app` (not launched)."""
    gr = _gradio()
    lim = app.limits
    with gr.Blocks(title="imgen", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(f"## imgen {__version__}\nModels: " + ", ".join(f"`{n}`" for n in app.models))
        if app.names("text"):
            names = app.names("text")
            defaults = app.models[names[0]].config.sample
            with gr.Tab("Text to image"):
                with gr.Row():
                    with gr.Column():
                        model = gr.Dropdown(names, value=names[0], label="model", visible=len(names) > 1)
                        prompt = gr.Textbox(label="prompt", placeholder="a red circle in the top left",
                                            max_length=lim.max_prompt_chars, elem_id="prompt")
                        negative = gr.Textbox(label="negative prompt", max_length=lim.max_prompt_chars)
                        with gr.Row():
                            cfg = gr.Slider(1.0, 10.0, value=defaults.cfg, step=0.5, label="guidance (cfg)")
                            steps = gr.Slider(1, lim.max_steps, value=defaults.steps, step=1, label="steps")
                        with gr.Row():
                            sampler = gr.Dropdown(list(SAMPLERS), value=defaults.sampler if defaults.sampler in SAMPLERS
                                                  else SAMPLERS[0], label="sampler")
                            seed = gr.Number(0, precision=0, minimum=0, label="seed")
                            n = gr.Slider(1, lim.max_n, value=4, step=1, label="images")
                        go = gr.Button("Generate", variant="primary", elem_id="generate")
                    gallery = gr.Gallery(label="images (PNG with settings)", format="png", columns=4,
                                         object_fit="contain", buttons=GALLERY_BUTTONS, elem_classes="imgen-gallery",
                                         elem_id="t2i-gallery")
                inputs = [model, prompt, negative, cfg, steps, sampler, seed, n]
                go.click(_in_page(app.text_to_image), inputs, gallery, api_name="text_to_image")
                prompt.submit(_in_page(app.text_to_image), inputs, gallery, api_name=False)
            with gr.Tab("Image to image"):
                types = [".png", ".jpg", ".jpeg", ".webp", ".bmp"]
                with gr.Row():
                    with gr.Column():
                        model = gr.Dropdown(names, value=names[0], label="model", visible=len(names) > 1)
                        with gr.Tab("img2img (SDEdit)"):
                            file = gr.File(label="image", file_types=types, type="filepath")
                            prompt = gr.Textbox(label="prompt", max_length=lim.max_prompt_chars)
                            strength = gr.Slider(0.0, 1.0, value=0.6, step=0.05, label="strength (0 keeps the image)")
                            with gr.Row():
                                steps = gr.Slider(1, lim.max_steps, value=defaults.steps, step=1, label="steps")
                                seed = gr.Number(0, precision=0, minimum=0, label="seed")
                                n = gr.Slider(1, lim.max_n, value=4, step=1, label="images")
                            go_i2i = gr.Button("Redraw", variant="primary")
                        with gr.Tab("Inpaint"):
                            editor = gr.ImageEditor(label="image: paint the part to redraw", type="numpy",
                                                    image_mode="RGBA", sources=["upload"], layers=False,
                                                    brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"))
                            fill = gr.Textbox(label="prompt", max_length=lim.max_prompt_chars)
                            with gr.Row():
                                method = gr.Radio(["repaint", "replacement"], value="replacement", label="method")
                                fill_seed = gr.Number(0, precision=0, minimum=0, label="seed")
                                fill_n = gr.Slider(1, lim.max_n, value=4, step=1, label="images")
                            go_fill = gr.Button("Fill", variant="primary")
                        with gr.Tab("Edit (prompt-to-prompt)"):
                            edit_file = gr.File(label="image", file_types=types, type="filepath")
                            source = gr.Textbox(label="prompt that describes the image",
                                                max_length=lim.max_prompt_chars)
                            target = gr.Textbox(label="the same prompt with words swapped",
                                                max_length=lim.max_prompt_chars)
                            null_text = gr.Checkbox(False, label="null-text inversion (slower; keeps more of the image)")
                            go_edit = gr.Button("Edit", variant="primary")
                    gallery = gr.Gallery(label="images (PNG with settings)", format="png", columns=4,
                                         object_fit="contain", buttons=GALLERY_BUTTONS, elem_classes="imgen-gallery")
                go_i2i.click(_in_page(app.img2img), [model, file, prompt, strength, steps, seed, n], gallery,
                             api_name="img2img")
                go_fill.click(_in_page(app.inpaint), [model, editor, fill, method, fill_seed, fill_n], gallery,
                              api_name="inpaint")
                go_edit.click(_in_page(app.edit), [model, edit_file, source, target, null_text], gallery,
                              api_name="edit")
        if app.names("sample"):
            names = app.names("sample")
            first = app.models[names[0]]
            classes = first.num_classes
            with gr.Tab("Class-conditional" if classes else "Sample"):
                with gr.Row():
                    with gr.Column():
                        model = gr.Dropdown(names, value=names[0], label="model", visible=len(names) > 1)
                        label = gr.Dropdown(["all"] + [str(i) for i in range(classes or 0)], value="all",
                                            label="class label (all: one of each in turn)", visible=bool(classes))
                        with gr.Row():
                            cfg = gr.Slider(1.0, 10.0, value=first.config.sample.cfg, step=0.5, label="guidance (cfg)",
                                            visible=bool(classes))
                            steps = gr.Slider(1, lim.max_steps, value=first.config.sample.steps, step=1, label="steps")
                        with gr.Row():
                            sampler = gr.Dropdown(list(SAMPLERS), value=first.config.sample.sampler
                                                  if first.config.sample.sampler in SAMPLERS else SAMPLERS[0],
                                                  label="sampler")
                            seed = gr.Number(0, precision=0, minimum=0, label="seed")
                            n = gr.Slider(1, lim.max_n, value=lim.max_n, step=1, label="images")
                        go = gr.Button("Sample", variant="primary")
                    gallery = gr.Gallery(label="images (PNG with settings)", format="png", columns=4,
                                         object_fit="contain", buttons=GALLERY_BUTTONS, elem_classes="imgen-gallery")
                go.click(_in_page(app.sample), [model, label, cfg, steps, sampler, seed, n], gallery,
                         api_name="sample")
        if app.names("upscale"):
            names = app.names("upscale")
            first = app.models[names[0]]
            with gr.Tab("Upscale"):
                with gr.Row():
                    with gr.Column():
                        model = gr.Dropdown(names, value=names[0], label="upsampler", visible=len(names) > 1)
                        size = first.net.low_res_size
                        file = gr.File(label=f"image (resized to {size}x{size} first)",
                                       file_types=[".png", ".jpg", ".jpeg", ".webp", ".bmp"], type="filepath")
                        with gr.Row():
                            steps = gr.Slider(1, lim.max_steps, value=first.config.sample.steps, step=1,
                                              label="steps (diffusion upsamplers)")
                            seed = gr.Number(0, precision=0, minimum=0, label="seed")
                        go = gr.Button("Upscale", variant="primary")
                    gallery = gr.Gallery(label="upscaled (PNG with settings)", format="png", columns=2,
                                         object_fit="contain", buttons=GALLERY_BUTTONS, elem_classes="imgen-gallery")
                go.click(_in_page(app.upscale), [model, file, steps, seed], gallery, api_name="upscale")
        if app.names("latent"):
            names = app.names("latent")
            with gr.Tab("Latent interpolation"):
                with gr.Row():
                    with gr.Column():
                        model = gr.Dropdown(names, value=names[0], label="autoencoder", visible=len(names) > 1)
                        types = [".png", ".jpg", ".jpeg", ".webp", ".bmp"]
                        file_a = gr.File(label="image A", file_types=types, type="filepath")
                        file_b = gr.File(label="image B", file_types=types, type="filepath")
                        frames = gr.Slider(2, 16, value=8, step=1, label="frames")
                        mode = gr.Radio(["linear", "slerp"], value="linear", label="interpolation")
                        go = gr.Button("Interpolate", variant="primary")
                    gallery = gr.Gallery(label="frames (PNG with settings)", format="png", columns=8,
                                         object_fit="contain", buttons=GALLERY_BUTTONS, elem_classes="imgen-gallery")
                go.click(_in_page(app.interpolate), [model, file_a, file_b, frames, mode], gallery,
                         api_name="interpolate")
    demo.queue(default_concurrency_limit=lim.concurrency, max_size=lim.queue_size)
    return demo


def _check_address(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ImgenError(f"--port must be in 1..65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind(address)
    except OSError as e:
        raise ImgenError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick a free port with --port, "
                         "or a local address with --host") from None


def serve(model_dirs: dict, host: str = "127.0.0.1", port: int = 7860, limits: Limits = Limits(),
          block: bool = True):
    """Load the models ({name: directory}), build the page and serve it on host:port (blocking unless block=False;
    then the launched Blocks is returned, close() it)."""
    from imgen.model import load

    _check_address(host, port)  # before gradio and the models load: a taken port fails at once
    gr = _gradio()
    app = App({name: load(path) for name, path in model_dirs.items()}, limits)
    demo = build(app)
    try:
        demo.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                    max_file_size=limits.max_file_size, footer_links=[], ssr_mode=False, prevent_thread_lock=True,
                    quiet=True, show_error=True, theme=gr.themes.Default(), css=PIXELATED_CSS, mcp_server=False)
    except OSError as e:
        raise ImgenError(f"cannot listen on {host}:{port} ({e}); pick a free port with --port") from None
    print(f"imgen serve: {', '.join(app.models)} on http://{host}:{port} (Ctrl+C stops)", flush=True)
    if block:
        demo.block_thread()
    return demo
