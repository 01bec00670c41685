"""Top-k accuracy of a batch, as Dassl's `compute_accuracy` returns it."""


def compute_accuracy(output, target, topk=(1,)):
    """List of top-k accuracies in percent, one 1-element tensor per k (`[0].item()` is top-1).

    `output` holds the logits [N, C] (or a tuple/list whose first element does); `target` the
    labels [N]. A sample counts for top-k when its label is among the k largest logits.
    """
    if isinstance(output, (tuple, list)):
        output = output[0]
    maxk = max(topk)
    batch_size = target.size(0)
    top = output.topk(maxk, dim=1, largest=True, sorted=True).indices  # [N, maxk]
    hits = top.eq(target.view(-1, 1).to(top.device))  # [N, maxk]
    return [hits[:, :k].any(dim=1).float().sum(0, keepdim=True).mul_(100.0 / batch_size) for k in topk]
