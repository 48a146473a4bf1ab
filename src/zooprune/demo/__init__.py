"""The web demo (``zooprune demo``): upload an image, ask, compare methods side by side.

Needs the optional ``demo`` extra (``pip install 'zooprune[demo]'``, which brings gradio);
nothing here is imported by ``import zooprune``.
"""
