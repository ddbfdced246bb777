"""compute_erf refuses the bad inputs of the command-line table with a clear exception
type and message, before the first image (and, where the model is not needed, before
the model is built)."""
import pytest

from mmseg_erf import compute_erf
from mmseg_erf.checkpoint import CheckpointMismatchError, UntrustedCheckpointError
from mmseg_erf.engine import NoImagesError, TargetError
from mmseg_erf.errors import ConfigError, ERFUsageError, NotACheckpointError

from conftest import TINY_CONFIG
from test_bad_inputs import bad  # noqa: F401  (the module-scoped fixture of bad files)

# (id, keyword arguments over the base call, exception type, a word of the message)
API_ROWS = [
    ('config missing', dict(model='{root}/missing.py'), FileNotFoundError, 'does not exist'),
    ('config syntax error', dict(model='{syntax_config}'), ConfigError, 'syntax error'),
    ('config unknown base', dict(model='{unknown_base_config}'), ConfigError,
     'cannot be read'),
    ('checkpoint missing', dict(checkpoint='{root}/nowhere.pth'), FileNotFoundError,
     'does not exist'),
    ('checkpoint is text', dict(checkpoint='{text_file}'), NotACheckpointError,
     'is not a checkpoint'),
    ('checkpoint truncated', dict(checkpoint='{truncated_ckpt}'), NotACheckpointError,
     'is not a checkpoint'),
    ('checkpoint of another model', dict(checkpoint='{other_ckpt}'),
     CheckpointMismatchError, 'does not fit'),
    ('checkpoint outside the allow-list', dict(checkpoint='{untrusted_ckpt}'),
     UntrustedCheckpointError, 'allow-list'),
    ('images missing', dict(images='/no/such/dir'), FileNotFoundError, 'does not exist'),
    ('images is a file', dict(images='{text_file}'), ERFUsageError, 'not a folder'),
    ('images unusable', dict(images='{junk_images}'), NoImagesError, 'no usable image'),
    ('num_images 0', dict(num_images=0), ERFUsageError, 'num_images'),
    ('input_size 0', dict(input_size=0), ERFUsageError, 'input_size'),
    ('batch_size 0', dict(batch_size=0), ERFUsageError, 'batch_size'),
    ('point 1.5', dict(point=(1.5, 0.5)), ERFUsageError, 'point'),
    ('point of one value', dict(point=(0.5, )), ERFUsageError, 'point'),
    ('class_index negative', dict(class_index=-1), ERFUsageError, 'class_index'),
    ('class_index without logit target', dict(class_index=1), ERFUsageError, 'logit'),
    ('class_index beyond the classes', dict(class_index=999, targets=['decode_head']),
     ERFUsageError, '4 classes'),
    ('device cuda on CPU torch', dict(device='cuda'), ERFUsageError, 'CUDA'),
    ('targets empty', dict(targets=[]), ERFUsageError, 'targets'),
    ('target neck without a neck', dict(targets=['neck.0']), TargetError, 'no neck'),
    ('target unknown', dict(targets=['nothing.here']), TargetError, 'unknown target'),
    ('input size the model cannot take', dict(model='{window_config}', input_size=96),
     ERFUsageError, '64 or 128'),
    ('model not a module', dict(model=42), ERFUsageError, 'nn.Module'),
]


@pytest.mark.parametrize('row', API_ROWS, ids=[r[0] for r in API_ROWS])
def test_api_bad_input_table(row, bad, monkeypatch):  # noqa: F811
    """Mutation: api.check_values removed -> the range rows raise nothing or a bare
    ValueError from the engine after the build."""
    import torch

    import mmseg_erf.run.loop
    _, overrides, error_type, word = row
    if 'CUDA' in word and torch.cuda.is_available():
        pytest.skip('this torch has CUDA')
    kwargs = dict(model=TINY_CONFIG, images='{images}', targets=['backbone.1'],
                  num_images=2, input_size=32)
    kwargs.update(overrides)
    kwargs = {k: v.format(**bad) if isinstance(v, str) else v for k, v in kwargs.items()}
    fed, real_feed = [], mmseg_erf.run.loop.feed_batch
    monkeypatch.setattr(mmseg_erf.run.loop, 'feed_batch',
                        lambda *a, **k: fed.append(1) or real_feed(*a, **k))
    with pytest.raises(error_type, match=word):
        compute_erf(**kwargs)
    if error_type is NoImagesError:
        return
    if row[0] == 'input size the model cannot take':
        # one forward per batch: the first batch is the size check (no blank forward
        # before it), refused before any image is added
        assert fed == [1], 'the size was checked by a forward besides the first batch'
    else:
        assert not fed, 'refused only after images were processed'


def test_value_errors_stay_value_errors():
    """Callers who catch ValueError keep catching every bad value."""
    for error in (ConfigError, NotACheckpointError, ERFUsageError, TargetError,
                  CheckpointMismatchError, UntrustedCheckpointError):
        assert issubclass(error, ValueError)
