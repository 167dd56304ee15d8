"""What the notebooks call: one function per step (:mod:`.study`) and the templates they are written from."""
