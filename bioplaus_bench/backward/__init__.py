"""Backward-pass rules: backprop with another tensor in place of a layer's weight in the backward
pass (feedback alignment, sign symmetry, Kolen-Pollack, …). ``rule`` holds the ``BackwardRule``
base class and the declarative feedback kinds (see ``api``); the layers' autograd functions with
a substitute backward weight are in ``model.substitute``."""
