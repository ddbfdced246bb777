"""Start-up: the OpenMP wait policy reaches the runtime from every entry point."""
import ast
import os
import subprocess
import sys
import time

import pytest

from mmseg_erf.benchmark import omp_policy
from mmseg_erf import startup
from mmseg_erf.startup import PhaseTimer, choose_wait_policy

from conftest import REPO, TINY_CONFIG

TOOLS = os.path.join(REPO, 'tools')
TORCH_LOADERS = ('torch', 'mmseg', 'mmengine', 'mmcv', 'mmseg_erf', 'torchvision')


def _spin_count(args, **env_changes):
    """GOMP_SPINCOUNT as the OpenMP runtime of ``python args`` printed it."""
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    env.update(env_changes, OMP_DISPLAY_ENV='VERBOSE')
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return omp_policy._spin_count(proc.stderr)


def test_the_users_wait_policy_wins():
    """The runtime itself reports the policy (GOMP_SPINCOUNT 0 = PASSIVE, 300000 =
    OpenMP's default, 3e10 = ACTIVE); that the CLI runs PASSIVE on a busy machine is
    asserted by ``test_cli_default_workers_verbose`` (test_api_cli.py). Guards the
    mutation: the variable set over the user's value."""
    script = os.path.join(TOOLS, 'erf_seg.py')
    assert _spin_count([script, '--help'], OMP_WAIT_POLICY='ACTIVE') == '30000000000'


def _first_torch_loader(path):
    """Top-level name of the first import in a script that can load torch's OpenMP."""
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            if name.split('.')[0] in TORCH_LOADERS:
                return name.split('.')[0]
    return None


@pytest.mark.parametrize('script', sorted(f for f in os.listdir(TOOLS) if f.endswith('.py')))
def test_every_tool_imports_mmseg_erf_before_torch(script):
    """``import mmseg_erf`` sets the policy; a tool that imports torch (or mmseg,
    mmengine, mmcv) first would start OpenMP without it (as benchmark_scan.py did)."""
    assert _first_torch_loader(os.path.join(TOOLS, script)) in (None, 'mmseg_erf')


def test_the_package_sets_the_policy_before_any_other_import():
    """``python -m mmseg_erf`` and console scripts import the package first, so its
    ``__init__`` must call ``choose_wait_policy()`` before it imports anything else
    (a submodule would load torch). Guards the mutation: the call moved below the
    registration imports."""
    tree = ast.parse(open(os.path.join(REPO, 'mmseg_erf', '__init__.py')).read())
    body = [n for n in tree.body if not (isinstance(n, ast.Expr)
                                         and isinstance(n.value, ast.Constant))]
    first, call = body[0], body[1]
    assert isinstance(first, ast.ImportFrom) and first.module == 'startup'
    assert ast.unparse(call) == 'choose_wait_policy()'


def test_choose_wait_policy_leaves_user_values_and_loaded_runtimes(monkeypatch):
    """Guards the mutations: the user's value overwritten, the variable set after torch
    loaded, no probe of the load (always PASSIVE, or never)."""
    import torch  # noqa: F401  (loaded: setting the variable now would be a lie)
    monkeypatch.delenv('OMP_WAIT_POLICY', raising=False)
    monkeypatch.setattr(startup, 'other_processes_cores', lambda: 1.0)
    assert choose_wait_policy() is None and 'OMP_WAIT_POLICY' not in os.environ
    monkeypatch.setattr(sys, 'modules', {k: v for k, v in sys.modules.items()
                                         if k != 'torch'})
    monkeypatch.setenv('OMP_WAIT_POLICY', 'active')
    assert choose_wait_policy() is None and os.environ['OMP_WAIT_POLICY'] == 'active'
    assert 'active (from the environment)' in startup.wait_policy_summary()
    monkeypatch.delenv('OMP_WAIT_POLICY')
    assert choose_wait_policy() == 'PASSIVE' and os.environ['OMP_WAIT_POLICY'] == 'PASSIVE'
    assert 'PASSIVE (other processes\' load at start-up: 1.0 cores)' in \
        startup.wait_policy_summary()


@pytest.mark.parametrize('samples,expected', [
    ((0.0, ), None), ((0.4, ), None), ((0.6, 0.7), 'PASSIVE'), ((1.0, 1.0), 'PASSIVE'),
    ((None, ), 'PASSIVE'), ((1.0, 0.1), None), ((1.0, None), 'PASSIVE')])
def test_passive_only_on_a_busy_machine(monkeypatch, samples, expected):
    """Idle: OpenMP's default (the fastest there); busy for both samples, or unknown:
    PASSIVE; a blip in the first sample only: the default. Guards the mutations: no
    second sample, the threshold compared the wrong way."""
    monkeypatch.delenv('OMP_WAIT_POLICY', raising=False)
    monkeypatch.setattr(sys, 'modules', {k: v for k, v in sys.modules.items()
                                         if k != 'torch'})
    answers = iter(samples)
    monkeypatch.setattr(startup, 'other_processes_cores', lambda: next(answers))
    assert choose_wait_policy() == expected
    assert next(answers, 'all used') == 'all used'
    assert os.environ.get('OMP_WAIT_POLICY') == expected
    if expected is None:
        assert "OpenMP's default (other processes' load at start-up: " in \
            startup.wait_policy_summary()


def test_the_load_of_a_busy_loop_is_seen():
    """/proc/stat over the 0.1 s sample: one busy-loop process is about one core."""
    proc = omp_policy.start_busy_loop()
    try:
        time.sleep(0.3)  # past the interpreter's start
        cores = startup.other_processes_cores()
    finally:
        omp_policy.stop(proc)
    assert cores is not None and 0.6 <= cores <= os.cpu_count() + 0.01


def test_phase_timer_sums_consecutive_phases():
    import time
    timer = PhaseTimer(start=time.perf_counter() - 1.0)   # began a second ago
    timer.mark('imports')
    timer.mark('config')
    (first, spent), (second, rest) = timer.phases
    assert (first, second) == ('imports', 'config') and spent >= 1.0 and 0 <= rest < 1.0
    assert timer.summary().startswith(f'start-up: imports {spent:.2f} s, config ')
    assert timer.summary().endswith(f'({spent + rest:.2f} s in all)')


def test_busy_loop_runs_until_stopped():
    proc = omp_policy.start_busy_loop()
    assert proc.poll() is None
    omp_policy.stop(proc)
    assert proc.poll() is not None


def test_omp_benchmark_runs_each_policy_in_a_fresh_process(capsys):
    """Each policy's run reports the spin count of its own OpenMP runtime, the unset
    run really had no OMP_WAIT_POLICY (torch loads before mmseg_erf there), and the
    default's run is mmseg-erf's choice under load: PASSIVE."""
    code = omp_policy.main(['--model', TINY_CONFIG, '--size', '32', '--num-images', '1',
                            '--repeats', '1', '--conditions', 'busy', '--targets',
                            'backbone.0', '--policies', 'default', 'unset', 'PASSIVE',
                            '--threads', '1', '--limit', '1000'])
    out = capsys.readouterr().out
    assert code == 0, out
    for label, spins in (('unset (OpenMP default)', '300000'), ('PASSIVE', '0'),
                         ("default (mmseg-erf's choice)", '0')):
        assert f'| busy | {label} | {spins} | 1 |' in out, out
    assert 'unset: s/image' in out and 'OMP_WAIT_POLICY in the process: None' in out
    assert 'busy: the default (mmseg-erf chose PASSIVE) median' in out
