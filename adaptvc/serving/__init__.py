"""Serving: a version of an adapter handed to an inference server, in the layout servers read.

* :mod:`adaptvc.serving.layout` — serving names, per-version folder names (``support-bot@3fa9c1d2e4b5``), the
  ``adaptvc.json`` record kept in every export, and the one documented rewrite (``base_model_name_or_path``).
* :mod:`adaptvc.serving.export` — write a version into an immutable per-version folder (or bucket prefix),
  verified by hash, never over anything adaptvc did not write.
* :mod:`adaptvc.serving.deploy` — switch ``DIR/NAME`` to a version with one atomic rename of a symbolic link,
  prune old versions, and check what is deployed.
* :mod:`adaptvc.serving.swap` — swap a live ``PeftModel``'s adapter weights in place with PEFT's hotswap,
  from a store; :mod:`adaptvc.serving.hotswap` — the public ``adaptvc.hotswap(model, repo, rev)`` (the only
  serving module that opens a Repository).
"""
