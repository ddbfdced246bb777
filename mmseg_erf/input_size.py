"""Input sizes: which the model takes (named when one does not work), and whether one fits
in memory (estimated before the run, so a too-large size is refused instead of ending in
the kernel's out-of-memory kill).

Stride, window, patch and pooling constraints differ between models and are declared
nowhere, so the honest test of a size is a forward at that size. The run's first batch
is that test (no separate start-up forward); only when it fails are blank images tried
at other sizes: the config's crop size and test scale first, then multiples of 32 near
the requested one.
"""
import os
import threading
import time
from typing import Callable, List, Optional

import torch

from .errors import ERFUsageError

MODEL_ERRORS = (RuntimeError, AssertionError, ValueError, IndexError)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f'{type(error).__name__}: {text[0][:200]}' if text else type(error).__name__


def _side(value) -> Optional[int]:
    """One side from a size setting: an int, or the square (h, w) an ERF can use."""
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) for v in value):
        return value[0] if value[0] == value[1] else min(value)
    return None


def config_sizes(cfg) -> List[int]:
    """Sides a config names: its crop size (``crop_size``, the data preprocessor's
    ``size``, a backbone's ``img_size``), then the short side of its test scale."""
    if cfg is None:
        return []
    model = cfg.get('model') or {}
    found = [_side(cfg.get('crop_size')), _side((model.get('data_preprocessor') or {})
                                                 .get('size')),
             _side((model.get('backbone') or {}).get('img_size'))]
    for step in cfg.get('test_pipeline') or []:
        if isinstance(step, dict) and str(step.get('type', '')).endswith('Resize'):
            scale = step.get('scale')
            if isinstance(scale, (list, tuple)) and len(scale) == 2:
                found.append(min(scale))
    return list(dict.fromkeys(s for s in found if s))


def _works(taps, size: int, device) -> Optional[BaseException]:
    """None when a blank size x size image goes through, else the error."""
    from .engine import TargetError
    try:
        with torch.no_grad():
            taps(torch.zeros(1, 3, size, size, device=device))
        return None
    except TargetError:
        raise
    except MODEL_ERRORS as error:
        return error


def _backbone_taps(taps):
    """Taps that stop after the backbone, when the size already fails there: sizes are
    then tried on the backbone alone (a ViT at 640 costs seconds, its UperNet head more)."""
    from .engine import FeatureTaps
    if not taps.segmentor:
        return None
    return FeatureTaps(taps.model, ['backbone.0'], taps.head_runner)


def input_size_error(taps, input_size: int, device='cpu', cfg=None, search: int = 6,
                     error: Optional[BaseException] = None) -> ERFUsageError:
    """The one-sentence refusal of ``input_size``: why the model refused it and which
    sizes work, the config's own sizes first, then the nearest multiples of 32."""
    reason = _one_line(error) if error is not None else None
    shallow = _backbone_taps(taps)
    if shallow is not None and _works(shallow, input_size, device) is not None:
        taps = shallow
    own = [s for s in config_sizes(cfg) if s != input_size]
    good_own = [s for s in own if _works(taps, s, device) is None]
    below = [s for s in range(input_size // 32 * 32, 0, -32) if s != input_size][:search]
    above = list(range((input_size // 32 + 1) * 32, input_size + 32 * search + 1, 32))
    lower = next((s for s in below if s not in own and _works(taps, s, device) is None), None)
    upper = next((s for s in above if s not in own and _works(taps, s, device) is None), None)
    near = [s for s in (lower, upper) if s is not None]
    sizes = ' or '.join(str(s) for s in good_own + near)
    why = f' ({reason})' if reason else ''
    if sizes:
        source = (f" ({'the first is' if len(good_own) == 1 else 'the first are'} the "
                  f"config's own)" if good_own and near else
                  " (the config's own)" if good_own else '')
        return ERFUsageError(f'the model cannot take a {input_size}x{input_size} input{why}; '
                             f'use --input-size {sizes}{source}')
    tried = ', '.join(str(s) for s in own + below[:2] + above[:2])
    return ERFUsageError(f'the model cannot take a {input_size}x{input_size} input{why}, '
                         f'nor {tried}: check the model or pass a size it was built for')


def check_input_size(taps, input_size: int, device='cpu', search: int = 6, cfg=None) -> None:
    """Reject an input size the model cannot take (a blank forward at that size).

    The doors do not call this before a run: the first batch is the check there
    (:func:`refused_size`). Raises ERFUsageError naming the sizes that work.
    """
    error = _works(taps, input_size, device)
    if error is not None:
        raise input_size_error(taps, input_size, device, cfg, search, error)


def refused_size(taps, input_size: int, error: BaseException, device='cpu',
                 cfg=None) -> Optional[ERFUsageError]:
    """After the first batch failed with ``error``: the size refusal when the size is
    to blame (a blank image at that size fails too), else None (re-raise ``error``)."""
    if not isinstance(error, MODEL_ERRORS) or _works(taps, input_size, device) is None:
        return None
    return input_size_error(taps, input_size, device, cfg, error=error)


# ---- memory ------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open('/proc/self/statm') as statm:
        return int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def available_bytes(device) -> Optional[int]:
    """Memory a run can still use: free GPU memory, or the kernel's MemAvailable."""
    device = torch.device(device)
    if device.type == 'cuda':
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        with open('/proc/meminfo') as meminfo:
            for line in meminfo:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_growth(run: Callable[[], None], device) -> int:
    """Bytes by which memory use rose at its peak while ``run()`` ran (GPU: allocator
    peak; CPU: resident set sampled every 2 ms)."""
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    base, peak, done = _rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], _rss_bytes()) - base


GIB = 2 ** 30


def check_memory(session, input_size: int, batch_size: int, device='cpu',
                 probe_size: int = 256, warn: Optional[Callable[[str], None]] = None,
                 margin: float = 0.8) -> Optional[int]:
    """Estimate the peak memory of a run before it starts; refuse one that cannot fit.

    Activations grow with the input area, so one ERF of a blank image at
    ``probe_size`` (its forward and every target's backward), scaled by
    ``(input_size / probe_size)^2 * batch_size``, estimates the run's peak. Sizes up
    to twice ``probe_size`` are not probed: there the probe would cost a quarter of an
    image or more, and the first batch shows the truth about as fast.

    Returns:
        int or None: the estimate in bytes (None when not probed).

    Raises:
        ERFUsageError: the estimate exceeds the available memory.
    """
    if input_size <= 2 * probe_size:
        return None
    from .engine import input_gradient_maps
    probe = torch.zeros(1, 3, probe_size, probe_size, device=device, requires_grad=True)

    def run():
        with torch.enable_grad():
            input_gradient_maps(session.taps(probe), probe, session.points.point)

    try:
        grown = peak_growth(run, device)
    except MODEL_ERRORS:
        return None  # the probe size does not suit the model; the first batch will tell
    estimate = int(max(grown, 0) * (input_size / probe_size) ** 2 * batch_size)
    available = available_bytes(device)
    if available is None:
        return estimate
    where = 'GPU memory' if torch.device(device).type == 'cuda' else 'memory'
    sizes = (f'{estimate / GIB:.1f} GiB at {input_size}x{input_size}, batch {batch_size} '
             f'(measured at {probe_size}, scaled by area)')
    if estimate > available:
        fit = int(probe_size * (available * margin / max(grown * batch_size, 1)) ** 0.5)
        raise ERFUsageError(f'the run needs about {sizes}, more than the {available / GIB:.1f} '
                            f'GiB of {where} available; use a smaller --input-size (about '
                            f'{fit // 32 * 32} fits) or --batch-size, or free memory')
    if warn is not None and estimate > margin * available:
        warn(f'the run needs about {sizes}, close to the {available / GIB:.1f} GiB of '
             f'{where} available')
    return estimate
