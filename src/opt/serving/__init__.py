"""Serving: `opt package` (best model -> BentoML store -> Bento) and the BentoML service.

bundle.py (what a packaged model holds), runtime.py (the model in-process), inputs.py
(untrusted request inputs -> tensors or a 4xx), package.py (the stage), service.py (BentoML).
"""
