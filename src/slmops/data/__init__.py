"""Data: load, chunk, embed, index and version document corpora; retrieve from them."""
