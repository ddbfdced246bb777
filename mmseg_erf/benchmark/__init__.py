"""Speed and memory of mmseg-erf against the reference ERF recipe (``tools/benchmark_erf.py``).

Two ways to get the same maps on the same model and the same images:

(a) the reference recipe of RepLKNet's and VMamba's ``erf`` scripts: batch 1, one
    target per pass, the whole segmentor run forward for every target
    (``model(x, mode='tensor')``, backbone stages read by a forward hook), then
    ``g = autograd.grad(relu(F[:, :, h//2, w//2]).sum(), x)`` and
    ``relu(g).sum(channels)`` accumulated;
(b) mmseg-erf: :class:`~mmseg_erf.engine.ERFSession`, every target captured in one
    forward truncated after the deepest one, one backward per target on the
    retained graph, images batched.

Each variant runs in its own spawned process so that peak resident memory
(``VmHWM``, restarted after an untimed warm-up image) and peak GPU memory belong
to that variant alone (model and inputs included); the parent only
schedules the runs (interleaved a, b, b, a, ... to share the noise of a busy
machine), measures the matmul and convolution rates and prints the tables.

Modules: :mod:`.recipes` (models, images and the two variants), :mod:`.measure`
(one variant in its own process; FLOPs, profile, machine rates) and :mod:`.report`
(statistics, tables and the command line).
"""
from .measure import (conv_rate, count_flops, matmul_rate, measure, peak_rss_bytes,
                      phase_profile, reset_peak_rss, run_isolated)
from .recipes import (AMP_DTYPES, DEFAULT_MODELS, MODEL_TABLE, TARGETS, load_model,
                      make_inputs, map_agreement, reference_maps, resolve_config,
                      session_maps)
from .report import build_parser, main, print_report, ratio_row, table_rows, variant_stats

__all__ = [
    'AMP_DTYPES', 'DEFAULT_MODELS', 'MODEL_TABLE', 'TARGETS', 'build_parser', 'conv_rate',
    'count_flops', 'load_model', 'main', 'make_inputs', 'map_agreement', 'matmul_rate',
    'measure', 'peak_rss_bytes', 'phase_profile', 'print_report', 'ratio_row',
    'reference_maps', 'reset_peak_rss', 'resolve_config', 'run_isolated', 'session_maps',
    'table_rows', 'variant_stats'
]
