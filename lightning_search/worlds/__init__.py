"""Procedural worlds whose truth is known: what their images hold, and the captions that describe them."""
