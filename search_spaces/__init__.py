"""The built-in search spaces (``quick.yaml``, ``aim2020.yaml``), shipped as package data so an installed srnas
finds them by name (``nas.paths.builtin_spaces``). Format: ``nas/search/space.py``."""
