"""Running sums on disk (periodic atomic saves, resume, interrupted runs), and the rule
that a run never replaces another run's results without being told to."""
import glob
import json
import os
import os.path as osp
from typing import Mapping, Optional, Tuple

from ..engine import ERFAccumulator, ERFSession
from ..engine.files import METRICS_FILE
from ..errors import ERFUsageError, OutDirError, RunStateError

# fingerprint entries that do not change the maps: a run directory written with
# another number of processes holds the same results
_SAME_RESULTS = ('world_size', )


def differences(old: Mapping, new: Mapping) -> str:
    """``'key: old -> new, ...'`` over the keys whose values differ."""
    return ', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}'
                     for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))


def run_options(fingerprint: Mapping) -> dict:
    """What a finished run records in ``metrics.json`` (meta ``options``) to be recognised."""
    return {k: v for k, v in json.loads(json.dumps(dict(fingerprint), default=str)).items()
            if k not in _SAME_RESULTS}


class RunState:
    """This rank's running sums in ``<out_dir>/.erf_state/rank<r>.npz``.

    The file records how many of this rank's samples were consumed and a
    fingerprint of everything that shapes the maps (:meth:`ERFRequest.fingerprint`
    and the number of processes), for every kind of run, so ``--resume`` never
    continues a different run. Saves are atomic (write, flush to disk, then
    rename): a crash leaves the previous file or the new one.

    Args:
        out_dir (str): the run directory.
        fingerprint (dict): JSON-serialisable description of the run.
        rank (int): this process's rank.
    """

    def __init__(self, out_dir: str, fingerprint: Mapping, rank: int = 0):
        self.path = osp.join(out_dir, '.erf_state', f'rank{rank}.npz')
        self.fingerprint = json.dumps(dict(fingerprint), sort_keys=True, default=str)
        self._loaded: Optional[Tuple[ERFAccumulator, int]] = None

    def exists(self) -> bool:
        return osp.isfile(self.path)

    def save(self, session: ERFSession, seen: int) -> None:
        if session.accumulator is None:
            return
        session.accumulator.save(self.path, extra=dict(seen=seen, fingerprint=self.fingerprint))

    def load(self) -> Tuple[ERFAccumulator, int]:
        """Read and check the saved state (once); returns ``(accumulator, samples consumed)``.

        Raises:
            RunStateError: the file is damaged (truncated, not an ``.npz``, entries
                missing); the run is not started over behind the user's back.
            ERFUsageError: it was saved by a run with other options.
        """
        if self._loaded is not None:
            return self._loaded
        try:
            accumulator, extra = ERFAccumulator.load(self.path)
            saved, seen = str(extra['fingerprint']), int(extra['seen'])
            old = json.loads(saved)
        except Exception as error:  # zipfile.BadZipFile, EOFError, KeyError, ValueError...
            reason = ' '.join(str(error).split()) or type(error).__name__
            raise RunStateError(
                f'cannot resume: the saved state {self.path} is damaged ({type(error).__name__}: '
                f'{reason}); delete {osp.dirname(self.path)} and rerun without --resume to '
                f'start from the first image') from None
        if saved != self.fingerprint:
            diff = differences(old, json.loads(self.fingerprint))
            raise ERFUsageError(f'cannot resume {self.path}: the run differs ({diff}); '
                                f'rerun with the same options or without --resume')
        self._loaded = accumulator, seen
        return self._loaded

    def restore(self, session: ERFSession) -> int:
        """Load the saved sums into ``session``; returns the samples already consumed."""
        accumulator, seen = self.load()
        names = tuple(session.taps.names)
        if accumulator.targets != names:
            raise RunStateError(f'cannot resume: the saved state {self.path} holds targets '
                                f'{", ".join(accumulator.targets)}, this run computes '
                                f'{", ".join(names)}; delete {osp.dirname(self.path)} and '
                                f'rerun without --resume')
        session.accumulator = accumulator
        return seen

    def clear(self) -> None:
        if self.exists():
            os.remove(self.path)
            try:
                os.rmdir(osp.dirname(self.path))
            except OSError:
                pass  # another rank's file is still there


def protect_out_dir(out_dir: str, fingerprint: Mapping, state: RunState, resume: bool,
                    overwrite: bool) -> None:
    """Refuse to write where another run's results or saved sums would be replaced.

    A folder holding the finished (or partial) results of a run with the same
    options may be written again: the results are the same. Anything else is
    refused, naming the difference, unless ``overwrite``. With ``resume`` the saved
    state is read and checked here, before the model is built.

    Raises:
        OutDirError: another run's results, or an interrupted run, are there.
        RunStateError: ``resume`` over a damaged state.
    """
    if resume and state.exists():
        state.load()
        return
    if overwrite or not osp.isdir(out_dir):
        return
    if state.exists():
        raise OutDirError(f'{out_dir} holds the saved sums of an interrupted run; continue it '
                          f'with --resume, or pass --overwrite to start over (or choose '
                          f'another --out-dir)')
    metrics = osp.join(out_dir, METRICS_FILE)
    if not osp.isfile(metrics):
        if glob.glob(osp.join(glob.escape(out_dir), 'erf_*.npy')):
            raise OutDirError(f'{out_dir} holds ERF maps without a {METRICS_FILE}; pass '
                              f'--overwrite to replace them, or choose another --out-dir')
        return
    try:
        with open(metrics) as f:
            recorded = json.load(f).get('meta', {}).get('options')
    except (OSError, ValueError, AttributeError):
        recorded = 'unreadable'
    if not isinstance(recorded, dict):
        raise OutDirError(f'{out_dir} holds ERF results whose options are not recorded '
                          f'(written by ERFHook, compute_erf or an older erf_seg.py); pass '
                          f'--overwrite to replace them, or choose another --out-dir')
    diff = differences(recorded, run_options(fingerprint))
    if diff:
        raise OutDirError(f'{out_dir} holds the results of another run ({diff}); choose '
                          f'another --out-dir, or pass --overwrite to replace them')
