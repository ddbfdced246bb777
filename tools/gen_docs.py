#!/usr/bin/env python
"""Write the option tables of docs/cli.md and docs/hook.md from the code.

    python tools/gen_docs.py           # rewrite the tables in place
    python tools/gen_docs.py --check   # exit 1, naming each table that differs

Each table sits between two marker comments in its page, for example
``<!-- options:erf_seg begin -->`` and ``<!-- options:erf_seg end -->``; the text
between them is replaced, the rest of the page is left alone. The sources are read
live: ``mmseg_erf.cli.build_parser()`` (tools/erf_seg.py), the ``build_parser`` of
``mmseg_erf.compare`` (tools/erf_compare.py), and ``ERFHook.__init__``'s signature
with the ``Args:`` section of ERFHook's docstring.
"""
import argparse
import importlib
import importlib.util
import inspect
import os
import re
import sys
from typing import Callable, Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USAGE_WIDTH = 92


# ---- sources (module-level so a test can swap one for a changed copy) ----------------
def erf_seg_parser() -> argparse.ArgumentParser:
    from mmseg_erf.cli import build_parser
    return build_parser()


def erf_compare_parser() -> argparse.ArgumentParser:
    # mmseg_erf.compare may become a package; its build_parser stays importable by name
    module = importlib.import_module('mmseg_erf.compare')
    build = getattr(module, 'build_parser', None)
    if build is None:
        build = importlib.import_module('mmseg_erf.compare.cli').build_parser
    return build()


def erf_hook_class():
    from mmseg_erf.hooks import ERFHook
    return ERFHook


# ---- argparse -> Markdown -------------------------------------------------------------
def _escape(text: str) -> str:
    """Markdown-safe text: outside `code` spans, <, > and * would be read as HTML or
    emphasis (``<config name>`` would vanish on GitHub)."""
    parts = re.split(r'(`[^`]*`)', text)
    for i in range(0, len(parts), 2):
        parts[i] = (parts[i].replace('&', '&amp;').replace('<', '&lt;')
                    .replace('>', '&gt;').replace('*', '\\*'))
    return ''.join(parts)


def _rst(text: str) -> str:
    """Docstring markup to Markdown: ``x`` and :role:`~a.b` to `x` and `a.b`."""
    text = re.sub(r':\w+:`~?([^`]*)`', lambda m: f'`{m.group(1)}`', text)
    return re.sub(r'``([^`]*)``', r'`\1`', text)


def _cell(text: str) -> str:
    return _escape(' '.join(str(text).split())).replace('|', '\\|')


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=10000)
    if not action.option_strings:
        return action.metavar or action.dest
    return formatter._format_action_invocation(action)


def _default(action: argparse.Action) -> str:
    if not action.option_strings and action.nargs in ('?', '*'):
        return '-'  # argparse marks a '*' positional required; none is fine
    if action.required:
        return 'required'
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return 'off' if isinstance(action, argparse._StoreTrueAction) else 'on'
    value = action.default
    if value is None or value is argparse.SUPPRESS:
        return '-'
    if isinstance(value, (list, tuple)):
        return '`' + ' '.join(str(v) for v in value) + '`'
    return f'`{value}`'


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = argparse.HelpFormatter(parser.prog)
    return _cell(formatter._expand_help(action) if action.help else '')


def parser_table(parser: argparse.ArgumentParser) -> str:
    rows = ['| option | default | what it does |', '|---|---|---|']
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        invocation = _cell(_invocation(parser, action))
        rows.append(f'| `{invocation}` | {_default(action)} | {_help(parser, action)} |')
    return '\n'.join(rows)


def parser_section(parser: argparse.ArgumentParser) -> str:
    return '```text\n' + _usage(parser) + '\n```\n\n' + parser_table(parser)


def option_strings(parser: argparse.ArgumentParser) -> List[str]:
    """Every documented option string (``--img-dir``) and positional name."""
    names = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        names.extend(action.option_strings or [action.metavar or action.dest])
    return names


# ---- ERFHook -> Markdown --------------------------------------------------------------
def docstring_args(doc: str) -> Dict[str, Tuple[str, str]]:
    """``{name: (type, description)}`` from a Google-style ``Args:`` section."""
    lines = inspect.cleandoc(doc or '').splitlines()
    args: Dict[str, Tuple[str, str]] = {}
    inside, indent, current = False, None, None
    for line in lines:
        if not inside:
            inside = line.strip() == 'Args:'
            continue
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        if width == 0:  # the next section (or the end of Args)
            break
        if indent is None:
            indent = width
        match = re.match(r'(\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$', line.strip())
        if width == indent and match:
            current = match.group(1)
            args[current] = (match.group(2) or '', match.group(3))
        elif current is not None:
            kind, text = args[current]
            args[current] = (kind, f'{text} {line.strip()}')
    return args


def hook_arguments(hook) -> List[str]:
    return [name for name in inspect.signature(hook.__init__).parameters if name != 'self']


def hook_table(hook) -> str:
    documented = docstring_args(hook.__doc__)
    rows = ['| argument | default | type | what it does |', '|---|---|---|---|']
    for name, param in inspect.signature(hook.__init__).parameters.items():
        if name == 'self' or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = '(required)' if param.default is param.empty else f'`{param.default!r}`'
        kind, text = documented.get(name, ('', '(not in the docstring)'))
        rows.append(f'| `{name}` | {_cell(default)} | {_cell(kind)} | {_cell(_rst(text))} |')
    return '\n'.join(rows)


def hook_description(hook) -> str:
    """The docstring's paragraphs before ``Args:``, as Markdown paragraphs."""
    text = inspect.cleandoc(hook.__doc__ or '').split('\nArgs:')[0]
    paragraphs = [' '.join(p.split()) for p in re.split(r'\n\s*\n', text) if p.strip()]
    return '\n\n'.join(_escape(_rst(p)) for p in paragraphs)


# ---- the tables and where they live ---------------------------------------------------
# (marker name, page under docs/, what to call the source in a message, generator)
SECTIONS: List[Tuple[str, str, str, Callable[[], str]]] = [
    ('erf_seg', 'cli.md', 'mmseg_erf.cli.build_parser()',
     lambda: parser_section(erf_seg_parser())),
    ('erf_compare', 'cli.md', 'mmseg_erf.compare.build_parser()',
     lambda: parser_section(erf_compare_parser())),
    ('erf_hook_doc', 'hook.md', "ERFHook's docstring",
     lambda: hook_description(erf_hook_class())),
    ('erf_hook', 'hook.md', 'ERFHook.__init__ and its docstring',
     lambda: hook_table(erf_hook_class())),
]


def _markers(name: str) -> Tuple[str, str]:
    return f'<!-- options:{name} begin -->', f'<!-- options:{name} end -->'


def render(text: str, name: str, body: str) -> Optional[str]:
    """The page with the block ``name`` replaced by ``body``; None when its markers
    are missing."""
    begin, end = _markers(name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        return None
    note = ('<!-- generated by tools/gen_docs.py from the code; edit the code, then run '
            'python tools/gen_docs.py -->')
    return text[:start] + f'{begin}\n{note}\n\n{body}\n\n' + text[stop:]


def update(docs_dir: str = os.path.join(REPO, 'docs'), write: bool = True) -> List[str]:
    """Regenerate every table. Returns one line per table that differed from the page
    (written when ``write``) or whose markers are missing."""
    pages: Dict[str, str] = {}
    problems = []
    for name, page, source, generate in SECTIONS:
        path = os.path.join(docs_dir, page)
        if page not in pages:
            with open(path, encoding='utf-8') as f:
                pages[page] = f.read()
        new = render(pages[page], name, generate())
        if new is None:
            problems.append(f'docs/{page}: markers {" / ".join(_markers(name))} are missing')
            continue
        if new != pages[page]:
            problems.append(f'docs/{page}: the {name} table differs from {source}')
            pages[page] = new
    if write:
        for page, text in pages.items():
            path = os.path.join(docs_dir, page)
            with open(path, encoding='utf-8') as f:
                if f.read() == text:
                    continue
            with open(path, 'w', encoding='utf-8') as f:
                f.write(text)
    return problems


def check(docs_dir: str = os.path.join(REPO, 'docs')) -> List[str]:
    """What drifted, without writing anything."""
    return update(docs_dir, write=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true',
                        help='write nothing; exit 1 naming each table that differs')
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for line in problems:
            print(f'gen_docs.py: {line}; run python tools/gen_docs.py', file=sys.stderr)
        return 1 if problems else 0
    status = 0
    for line in update():
        if 'markers' in line:
            print(f'gen_docs.py: {line}; add them where the table belongs', file=sys.stderr)
            status = 1
        else:
            print(f'updated {line}')
    return status


if __name__ == '__main__':
    if importlib.util.find_spec('mmseg_erf') is None:  # not installed: this checkout
        sys.path.insert(0, REPO)
    sys.exit(main())
