"""Channel pruning of SRNets: channel graph -> gates -> importance/cost -> physically smaller model.

Typical loop (the schedule, CLI and distillation build on these)::

    from pruning import GatedModel, TaylorImportance, cost_of, normalized, shrink, unit_costs

    gated = GatedModel(model, mode="fine")           # or "coupled"; model: any SRNet (zoo, spec, searched subnet)
    taylor = TaylorImportance(gated)
    for lr, hr in batches:                           # gate_values is a Parameter: fine-tune gates + weights
        loss = l1(gated(lr), hr); loss.backward(); taylor.accumulate(); ...
    score = normalized(taylor.scores(), unit_costs(gated, "latency", DEFAULT_INPUT_SIZE))
    gated.prune(lowest_live_entries(score))          # your policy; check empty_convs(gated) stays []
    cost_of(gated, "flops", DEFAULT_INPUT_SIZE) # exact cost of the model shrink() would give, no shrinking
    small, spec = shrink(gated)                      # real smaller convs, no gates; small(x) == gated(x)
    nas.zoo.resolve.save_model(folder, small, spec)      # folder works with srnas profile / eval / sr

Modules:

``pruning.graph`` (package: ops table, union-find, tracer, assembly, types) -- ``analyze(model,
    example_size=(17, 19)) -> ChannelGraph``: channel *units* (union-find
    classes of channels that can only be pruned together) and *spaces* (units linked by residual adds,
    attention products, concatenations). ``ChannelGraph``: ``num_units``; per-unit numpy arrays
    ``unit_space``, ``unit_image``, ``unit_frozen``, ``unit_shared``, ``unit_private``, ``unit_prunable``,
    ``unit_channels`` (r^2 for pixel-shuffle groups); ``reasons`` (unit -> why frozen); ``spaces``
    (``Space(id, units, size, members=[(module, role, offset, length)], private, frozen, image)``);
    ``convs`` (path -> ``ConvInfo(name, kind=conv|depthwise|fixed, in_units, out_units, norm)``), ``norms``
    (BN/PReLU/depthwise -> ``NormInfo``), ``splits``, ``calls``, ``unknown_ops``; ``space_of(module, role)``;
    ``summary()`` (printable; lists every frozen unit's reason).
``pruning.gates`` -- ``GatedModel(model, mode="fine"|"coupled", graph=None)``: flat ``gate_values``
    (Parameter, init 1) and ``gate_mask`` (bool buffer); effective gate = value * mask; an entry is pruned when
    that is 0. Gates by name (``gates: dict[str, Gate]``; fine: ``"<conv>:out"``, ``"<conv>:in"``; coupled:
    ``"space<N>"``), each ``Gate(name, role, module, units, start)`` with ``.slice``/``.size``. Methods:
    ``gate_names()``, ``gate(name)``, ``set_gate(name, values)``, ``masks()``, ``set_mask(name, keep)``,
    ``set_masks(dict)``, ``prune(flat_entries)``, ``effective()``, ``live_entries()`` (nonzero and unit
    alive), ``unit_alive(nz=None)``, ``hooks_disabled()`` (context: the ungated model), ``remove()``
    (detach hooks). ``entry_unit``/``entry_role`` describe flat entries; ``ports[conv]`` maps each conv
    channel to its flat entry. See the module docstring for exact fine/coupled semantics.
``pruning.importance`` -- flat per-entry scores (``per_gate`` splits by name; pruned entries score 0):
    ``TaylorImportance(gated)`` (``accumulate()`` after each backward, ``scores()``, ``reset()``: Gate
    Decorator |g * dL/dg| summed over batches), ``taylor_scores(gated, data, ...)``, ``l1_importance(gated)``;
    costs: ``cost_of(gated, metric, input_size)`` with metric ``params|flops|activations|num_conv|latency``
    or a ``{metric: weight}`` mapping (equal to ``nas.measure.profiler.count_complexity`` of the shrunk
    model), ``unit_costs(gated, metric, input_size)`` (what pruning each entry alone saves),
    ``normalized(scores, costs)``, ``cost_model(gated, input_size) -> CostModel`` (``counts(nz)``,
    ``cost(metric, nz)`` for hypothetical masks).
``pruning.shrink`` -- ``shrink(gated) -> (model, spec)``; ``make_plan(gated)`` (the ``pruned`` plan);
    ``empty_convs(gated)`` (convs a mask pattern would empty; shrink refuses them); ``layout(gated)`` (which
    channels each conv keeps); ``compose_plans``.
``pruning.config`` -- ``PruneConfig`` (the schedule's options) and ``parse_prune_target(activations=,
    params=, flops=, runtime=, default=None) -> (metric, fraction)``, the one parser of ``--target-*`` options.
``pruning.select`` -- ``Selector``: which entries to prune to reach a goal on the cost model.
``pruning.calibrate`` -- measured runtime targets: candidates timed beside the unpruned model, the latency
    proxy calibrated to them, each round's goal, the reachable minimum.
``pruning.state`` -- ``state.json`` (resume): fingerprint, masks as plain data, restoring a round.
``pruning.schedule`` -- ``prune(model, spec, PruneConfig(target=..., metric=...), output_dir, train_data=...,
    val_data=...) -> PruneResult``: rounds of score -> prune -> distillation fine-tune until the target holds,
    then shrink + final fine-tune; resumable through ``output_dir/state.json`` (what ``srnas prune`` runs).
``pruning.report`` -- before / after pruning / after fine-tuning tables (``report.json``, ``report.md``;
    ``write_prune_report``), the other mode's architecture timed beside, and interleaved runtime measurements
    of several models (``measure_runtimes``).
``nas.models.pruned`` -- the plan format (module docstring), ``apply_plan(model, plan)`` (called by
    ``nas.models.network.SRNet`` for specs with a ``pruned`` key), ``encode_indices``/``decode_indices``,
    ``PrunedConv2d``/``PrunedBatchNorm2d`` (gather/scatter), the block declarations ``image_space`` and
    ``split_sizes`` (``is_image_space``, ``declared_splits``).
"""

from nas.models.pruned import apply_plan, decode_indices, encode_indices
from pruning.config import PruneConfig, parse_prune_target
from pruning.gates import Gate, GatedModel
from pruning.graph import ChannelGraph, Space, analyze
from pruning.importance import (
    METRICS,
    CostModel,
    TaylorImportance,
    cost_model,
    cost_of,
    l1_importance,
    normalized,
    per_gate,
    sensitivity_scores,
    taylor_scores,
    unit_costs,
)
from pruning.shrink import compose_plans, empty_convs, make_plan, shrink

__all__ = [
    "METRICS",
    "ChannelGraph",
    "CostModel",
    "Gate",
    "GatedModel",
    "PruneConfig",
    "Space",
    "TaylorImportance",
    "analyze",
    "apply_plan",
    "compose_plans",
    "cost_model",
    "cost_of",
    "decode_indices",
    "empty_convs",
    "encode_indices",
    "l1_importance",
    "make_plan",
    "normalized",
    "parse_prune_target",
    "per_gate",
    "shrink",
    "sensitivity_scores",
    "taylor_scores",
    "unit_costs",
]
