"""The documentation keeps up with the code.

- the option tables of docs/cli.md and docs/hook.md equal what tools/gen_docs.py
  generates from the parsers and ERFHook now (and a changed help string is caught);
- every option of erf_seg.py and erf_compare.py, and every ERFHook argument, is named in
  its page;
- README.md stays within 12 KB and shows the four recipes in its contents at the top;
- every relative link of README.md and docs/*.md resolves to a file (and an anchor, where
  it names one, to a heading of that file);
- every metric key erf_metrics writes is explained in docs/reading_erf.md.
"""
import argparse
import glob
import importlib.util
import os
import re

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, 'docs')
README = os.path.join(REPO, 'README.md')
README_LIMIT = 12 * 1024


def _load_gen_docs():
    spec = importlib.util.spec_from_file_location(
        'gen_docs', os.path.join(REPO, 'tools', 'gen_docs.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def gen_docs():
    return _load_gen_docs()


def _read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def _pages():
    return [README] + sorted(glob.glob(os.path.join(DOCS, '*.md')))


# ---- generated tables ------------------------------------------------------------------
def test_option_tables_match_the_code(gen_docs):
    drift = gen_docs.check(DOCS)
    assert not drift, ('the docs drifted from the code; run python tools/gen_docs.py:\n'
                       + '\n'.join(drift))


def test_a_changed_help_string_is_caught(gen_docs, monkeypatch):
    """The check is not vacuous: edit one help text of each parser and one hook
    docstring line, and each table is named as drifted."""
    original_seg, original_compare = gen_docs.erf_seg_parser, gen_docs.erf_compare_parser
    original_hook = gen_docs.erf_hook_class

    def edited(build):
        def parser():
            result = build()
            action = next(a for a in result._actions if a.option_strings
                          and a.help not in (None, argparse.SUPPRESS)
                          and not isinstance(a, argparse._HelpAction))
            action.help = action.help + ' (changed)'
            return result
        return parser

    def edited_hook():
        hook = original_hook()
        return type('ERFHook', (hook, ), {'__doc__': hook.__doc__.replace(
            'Args:', 'Args:\n        added (int): an argument nobody wrote down.', 1),
            '__init__': _with_extra_argument(hook.__init__)})

    monkeypatch.setattr(gen_docs, 'erf_seg_parser', edited(original_seg))
    monkeypatch.setattr(gen_docs, 'erf_compare_parser', edited(original_compare))
    monkeypatch.setattr(gen_docs, 'erf_hook_class', edited_hook)
    drift = '\n'.join(gen_docs.check(DOCS))
    for name in ('erf_seg', 'erf_compare', 'erf_hook'):
        assert f'the {name} table differs' in drift, drift


def _with_extra_argument(init):
    import inspect

    def __init__(self, *args, added: int = 0, **kwargs):
        init(self, *args, **kwargs)
    signature = inspect.signature(init)
    params = list(signature.parameters.values())
    params.append(inspect.Parameter('added', inspect.Parameter.KEYWORD_ONLY, default=0))
    __init__.__signature__ = signature.replace(parameters=params)
    return __init__


def test_check_mode_exits_1_naming_the_drift(gen_docs, tmp_path, capsys):
    for page in ('cli.md', 'hook.md'):
        text = _read(os.path.join(DOCS, page))
        (tmp_path / page).write_text(text.replace('| `--img-dir', '| `--image-dir', 1)
                                     if page == 'cli.md' else text)
    assert gen_docs.check(str(tmp_path)) == [
        'docs/cli.md: the erf_seg table differs from mmseg_erf.cli.build_parser()']
    # and a page without its markers is named too
    (tmp_path / 'hook.md').write_text('# ERFHook\n')
    assert any('options:erf_hook' in line for line in gen_docs.check(str(tmp_path)))


def test_every_option_is_in_cli_md(gen_docs):
    text = _read(os.path.join(DOCS, 'cli.md'))
    for tool, parser in (('erf_seg.py', gen_docs.erf_seg_parser()),
                         ('erf_compare.py', gen_docs.erf_compare_parser())):
        missing = [o for o in gen_docs.option_strings(parser) if f'`{o}' not in text]
        assert not missing, f'docs/cli.md does not name these {tool} options: {missing}'


def test_every_hook_argument_is_in_hook_md(gen_docs):
    text = _read(os.path.join(DOCS, 'hook.md'))
    missing = [a for a in gen_docs.hook_arguments(gen_docs.erf_hook_class())
               if f'`{a}`' not in text]
    assert not missing, f'docs/hook.md does not name these ERFHook arguments: {missing}'


def test_erf_compare_has_a_console_entry_point():
    setup = _read(os.path.join(REPO, 'setup.py'))
    assert re.search(r"'erf_compare\s*=\s*mmseg_erf\.compare(\.\w+)?:main'", setup)
    assert '`erf_compare`' in _read(os.path.join(DOCS, 'cli.md'))


# ---- README ----------------------------------------------------------------------------
def test_readme_fits_in_12_kb():
    size = os.path.getsize(README)
    assert size <= README_LIMIT, (f'README.md is {size} bytes, over {README_LIMIT}; move '
                                  f'reference material to docs/')


def test_readme_keeps_the_two_make_commands_and_the_recipes_on_its_first_screen():
    text = _read(README)
    assert re.search(r'^make demo +# 1\.', text, re.M)
    assert re.search(r'^make test +# 2\.', text, re.M)
    first_screen = '\n'.join(text.splitlines()[:15])
    for recipe in ('#a-', '#b-', '#c-', '#d-'):
        assert f']({recipe}' in first_screen, f'README contents lack recipe {recipe}'


# ---- links -----------------------------------------------------------------------------
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')


def _anchors(markdown):
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    anchors, seen = set(), {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith('```'):
            in_code = not in_code
        match = None if in_code else re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if not match:
            continue
        slug = re.sub(r'[^\w\- ]', '', match.group(1).strip().lower()).replace(' ', '-')
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f'{slug}-{count}')
    return anchors


def _links(markdown):
    in_code, links = False, []
    for line in markdown.splitlines():
        if line.startswith('```'):
            in_code = not in_code
        elif not in_code:
            links.extend(LINK.findall(re.sub(r'`[^`]*`', '', line)))
    return links


@pytest.mark.parametrize('page', _pages(), ids=lambda p: os.path.relpath(p, REPO))
def test_relative_links_resolve(page):
    text = _read(page)
    broken = []
    for link in _links(text):
        if re.match(r'[a-z][a-z0-9+.-]*:', link):  # http:, https:, mailto:
            continue
        path, _, anchor = link.partition('#')
        target = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(target):
            broken.append(f'{link} (no file {os.path.relpath(target, REPO)})')
        elif anchor and target.endswith('.md') and anchor not in _anchors(_read(target)):
            broken.append(f'{link} (no heading #{anchor})')
    assert not broken, f'{os.path.relpath(page, REPO)}: broken links: {broken}'


def test_the_link_checker_sees_a_broken_link():
    assert _links('see [x](docs/nope.md) and `[not](a/link.md)`') == ['docs/nope.md']
    assert 'the-vmamba-papers-figure-from-a-released-checkpoint' in _anchors(
        "## The VMamba paper's figure from a released checkpoint")


# ---- metrics ---------------------------------------------------------------------------
def _keys(value, out):
    if isinstance(value, dict):
        for key, item in value.items():
            if not re.fullmatch(r'[\d.]+', str(key)):  # thresholds and radii
                out.add(str(key))
            _keys(item, out)
    return out


def test_every_metric_is_explained_in_reading_erf_md():
    from mmseg_erf.engine.metrics import erf_metrics
    yy, xx = np.mgrid[-32:33, -32:33]
    erf_map = np.exp(-(yy ** 2 / 50.0 + xx ** 2 / 120.0 + yy * xx / 200.0))
    big = np.exp(-(np.mgrid[-300:301, -300:301] ** 2).sum(0) / 5000.0)  # binned fit
    keys = _keys(erf_metrics(erf_map), set()) | _keys(erf_metrics(big), set())
    text = _read(os.path.join(DOCS, 'reading_erf.md'))
    missing = sorted(k for k in keys if f'`{k}`' not in text)
    assert not missing, f'docs/reading_erf.md does not explain these metrics: {missing}'
