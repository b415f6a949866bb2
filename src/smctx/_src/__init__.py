"""Private implementation of smctx; the public API is re-exported by `smctx`."""
