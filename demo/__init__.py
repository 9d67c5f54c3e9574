"""The demo base: a small LTX-2 of the real diffusers classes that has really been trained.

`model.py` builds it and ships its weights (`weights/`), `data.py` draws the procedural shape
clips it was pretrained on, `recipe.py` pretrains it, `check.py` reads a rendered clip back.
It plugs into `model.source=demo` through the `ltx.bases` entry point; `ltx` never imports it.
"""
