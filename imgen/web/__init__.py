"""The web UI (`imgen serve`, imgen.web.app): a gradio page over imgen models. gradio comes from the `web` extra
and is imported only inside imgen.web.app's functions, so `import imgen` stays light."""
