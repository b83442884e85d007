"""Built-in publisher formats, one module per format family.

Each module exposes ``saereg_formats()`` and is registered through the ``saereg``
entry-point group, exactly as a third-party plugin would be.
"""
