"""One job across several devices: sequence parallelism over a ``torch.distributed`` process group.

The video tokens are split over the ranks; every per-token layer (patchify, AdaLN, norms, cross-attention, MLP, head)
runs on a rank's own tokens, and self-attention is made whole by :mod:`ltxv.parallel.attention` (Ulysses all-to-all
over heads, or a ring of key/value blocks where the heads do not divide). :mod:`ltxv.parallel.sequence` is the
pipeline side (a :data:`ltxv.pipelines.denoise.CallTransformer`), :mod:`ltxv.parallel.launch` starts the ranks, and
:mod:`ltxv.parallel.volume` gives the communication per step in closed form.
"""
