"""Running sums on disk: periodic atomic saves, resume, and interrupted runs."""
import json
import os
import os.path as osp
from typing import Mapping

from .engine import ERFAccumulator, ERFSession
from .errors import ERFUsageError


class RunState:
    """This rank's running sums in ``<out_dir>/.erf_state/rank<r>.npz``.

    The file records how many of this rank's samples were consumed and a
    fingerprint of everything that shapes the maps (config, checkpoint, targets,
    size, point, class, seed, number of processes), so ``--resume`` never
    continues a different run. Saves are atomic (write, then rename).

    Args:
        out_dir (str): the run directory.
        fingerprint (dict): JSON-serialisable description of the run.
        rank (int): this process's rank.
    """

    def __init__(self, out_dir: str, fingerprint: Mapping, rank: int = 0):
        self.path = osp.join(out_dir, '.erf_state', f'rank{rank}.npz')
        self.fingerprint = json.dumps(dict(fingerprint), sort_keys=True, default=str)

    def exists(self) -> bool:
        return osp.isfile(self.path)

    def save(self, session: ERFSession, seen: int) -> None:
        if session.accumulator is None:
            return
        session.accumulator.save(self.path, extra=dict(seen=seen, fingerprint=self.fingerprint))

    def restore(self, session: ERFSession) -> int:
        """Load the saved sums into ``session``; returns the samples already consumed."""
        accumulator, extra = ERFAccumulator.load(self.path)
        saved = str(extra['fingerprint'])
        if saved != self.fingerprint:
            old, new = json.loads(saved), json.loads(self.fingerprint)
            diff = ', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}'
                             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
            raise ERFUsageError(f'cannot resume {self.path}: the run differs ({diff}); '
                                f'rerun with the same options or without --resume')
        session.accumulator = accumulator
        return int(extra['seen'])

    def clear(self) -> None:
        if self.exists():
            os.remove(self.path)
            try:
                os.rmdir(osp.dirname(self.path))
            except OSError:
                pass  # another rank's file is still there
