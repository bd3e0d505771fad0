"""Pure planning: from the cached world to what a domain's reconcile must change.

Nothing here performs I/O or renders manifests: the planners decide which nodes join or leave, which
daemon holds which clique slot and what is wrong, and the reconcile applies their decisions.
"""
