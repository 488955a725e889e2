"""``python -m bench``: measure every path of the stack on one machine (see ``__main__``)."""
