"""Training batches drawn from a fixed set of stored augmented views, the way the CLAP and ProLIP
references train: they encode V augmented views of every support image once, then sample
training rows from those features (the engine's own cached mode draws one view per image per
epoch instead).

`MethodBatches` wraps the run's feature source: evaluation and `split_features` stay the
source's, training batches come from the method. Every draw uses torch's global RNG, which the
resume snapshots restore, so a resumed run draws what the uninterrupted one drew.
"""
import torch

from engine.features import num_view_batches


class MethodBatches:
    """A feature source whose training batches are `batches()` (an iterator of (features [B, D],
    labels [B])), `count()` per epoch; everything else is the wrapped source's."""

    def __init__(self, source, batches, count):
        self._source, self._batches, self._count = source, batches, count

    def __getattr__(self, name):
        return getattr(self._source, name)

    def train_batches(self):
        return self._batches()

    def num_train_batches(self):
        return self._count()


def pooled_rows(views, labels, cfg):
    """One epoch of the CLAP reference's sampling: the N x V stored rows shuffled as one pool,
    then as many batches of TRAIN_X.BATCH_SIZE rows as the image loader has batches
    (N // batch, or 1 when N < batch): an epoch sees batches x batch rows of the pool, the whole
    pool when it is smaller than one batch."""
    n, v = views.shape[:2]
    bs = int(cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
    perm = torch.randperm(n * v).to(views.device)
    for i in range(num_view_batches(n, cfg)):
        idx = perm[i * bs:(i + 1) * bs]
        yield views[idx // v, idx % v].float(), labels[idx // v]
