"""VMamba's January 2024 parameter names and their renaming to the current ones.

A module of its own, importing nothing of this package, because the backbone, the
architecture detection and the checkpoint readers all rename before they look.
"""
import re

__all__ = ['rename_legacy_keys']

# old name -> current name, as VMamba's VSSM._load_from_state_dict renames them (the
# classifier's too: classification checkpoints carry it)
_LEGACY_NAMES = (
    (re.compile(r'patch_embed\.proj\.'), 'patch_embed.0.'),
    (re.compile(r'patch_embed\.norm\.'), 'patch_embed.2.'),
    (re.compile(r'(layers\.\d+\.blocks\.\d+\.)ln_1\.'), r'\1norm.'),
    (re.compile(r'(layers\.\d+\.blocks\.\d+\.)self_attention\.'), r'\1op.'),
    (re.compile(r'norm\.'), 'classifier.norm.'),
    (re.compile(r'head\.'), 'classifier.head.'),
)


def rename_legacy_keys(state_dict: dict, prefix: str = '') -> int:
    """Rename VMamba's January 2024 parameter names under ``prefix``, in place.

    ``patch_embed.proj/norm`` -> ``patch_embed.0/2``, ``blocks.j.ln_1`` ->
    ``blocks.j.norm``, ``blocks.j.self_attention`` -> ``blocks.j.op``, and the
    old classifier ``norm``/``head`` -> ``classifier.norm/head``.

    Args:
        state_dict (dict): Mutable state dict; renamed entries move to its end.
        prefix (str): Where the backbone's names start ('' or 'backbone.').

    Returns:
        int: How many entries were renamed.
    """
    renamed = 0
    for key in [k for k in state_dict if k.startswith(prefix)]:
        name = key[len(prefix):]
        for pattern, replacement in _LEGACY_NAMES:
            if pattern.match(name):
                new = pattern.sub(replacement, name, count=1)
                state_dict[prefix + new] = state_dict.pop(key)
                renamed += 1
                break
    return renamed
