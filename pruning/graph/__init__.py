"""Channel-space analysis: which channels of which convs must be pruned together, and which never can be.

``analyze(model)`` runs one small forward pass under a ``TorchFunctionMode`` that sees every torch call with
its real tensors (concrete shapes, so shape-dependent control flow such as ESA's size check just runs; a
``torch.fx`` symbolic trace cannot get past it). Every channel of every conv output is a node; the rules below
unify nodes into *units* (union-find classes: channels that can only be pruned together):

- conv (``groups == 1``): its output channels are new nodes; its input channels are read (an *in port*).
  Depthwise conv (``groups == in == out``), BatchNorm and per-channel PReLU act channel by channel: out = in.
  Any other grouped conv or a conv with a weight that is no ``nn.Conv2d`` parameter freezes its channels.
- elementwise ops (``+ - * /``, ``where``, activations, pooling, interpolation, spatial reductions...) unify
  the channels of their operands position by position; a ``[N, 1, H, W]`` operand broadcasts (no unification);
  a unit merged from two different producers by such an op is *shared* (residual adds, attention products).
- ``torch.cat(dim=1)`` concatenates channel lists (a composite); ``split/chunk/narrow/[:, a:b]`` on dim 1
  select from them -- only ``torch.split`` inside a module that declares its ``split_sizes``
  (``nas.models.pruned``) can be resized; anywhere else the selected channels are frozen.
- ``pixel_shuffle(r)``: output channel k and input channels ``k*r^2 .. k*r^2 + r^2 - 1`` form one unit, so
  channels feeding a PixelShuffle are pruned in groups of r^2.
- the network input and output are the *image* (never pruned); so are convs that declare ``image_space``.
- anything unknown on the channel dimension (reductions over channels, permutes, matmul, per-channel
  constants...) marks the channels involved *frozen* (never pruned), with the op and module as the reason.

A *space* groups the units of conv outputs (and pixel-shuffle outputs) that are linked by unification: the
trunk of a residual network is one space; a distillation branch another. ``ChannelGraph.summary()`` lists them.

Modules: ``ops`` (the op table), ``nodes`` (union-find), ``trace`` (the rules, applied during the pass),
``build`` (``analyze`` and the assembly of the result), ``types`` (the result types).
"""

from pruning.graph.build import analyze
from pruning.graph.ops import COUNTED, EXAMPLE_SIZE, SUMMARY_ACTS
from pruning.graph.types import CallInfo, ChannelGraph, ConvInfo, NormInfo, Space, SplitInfo

__all__ = [
    "COUNTED",
    "EXAMPLE_SIZE",
    "SUMMARY_ACTS",
    "CallInfo",
    "ChannelGraph",
    "ConvInfo",
    "NormInfo",
    "Space",
    "SplitInfo",
    "analyze",
]
