"""Calibration metrics of an evaluation, and SaLS post-hoc logit rescaling.

Every evaluation reports, besides accuracy:
- `ece`: expected calibration error over the whole split (not per sample), 15 equal-width bins
  of the top-1 confidence: sum over bins of |bin| / N * |accuracy(bin) - mean confidence(bin)|,
  a sample with confidence c in bin b when lower_b < c <= upper_b (bin 0 also holds c = 0);
- `classwise_ece`: the same for each class k on p_k of every sample against "label is k",
  averaged over the classes;
- `confidence`: the mean top-1 probability;
- `nll`: the mean negative log-likelihood of the true label, in nats.
ECE, class-wise ECE and confidence are in percent, as accuracy is.

The meter accumulates per-bin sums batch by batch, so a 50,000 x 1,000 ImageNet evaluation
never holds its probabilities at once.

SaLS ("Robust calibration of large vision-language adapters", ECCV 2024) maps each sample's
adapted logits l into the range of its zero-shot logits l_zs:
    l' = (l - min l) / (max l - min l) * (max l_zs - min l_zs) + min l_zs,
an increasing affine map per sample, so the predicted class (and accuracy) never changes.
"""
import torch

NUM_BINS = 15


def _bin_index(p, num_bins):
    """Bin of each probability: lower < p <= upper over equal-width bins of [0, 1]."""
    return (torch.ceil(p * num_bins).long() - 1).clamp_(0, num_bins - 1)


class CalibrationMeter:
    def __init__(self, num_bins=NUM_BINS):
        self.num_bins = num_bins
        self.reset()

    def reset(self):
        self.n = 0
        self.nll_sum = 0.0
        self.conf_sum = 0.0
        self.top = torch.zeros(3, self.num_bins, dtype=torch.float64)  # count, confidence sum, correct sum
        self.per_class = None  # [3, K, bins]: count, p_k sum, (label == k) sum

    @torch.no_grad()
    def update(self, logits, labels):
        logits = logits.detach().double().cpu()
        labels = labels.detach().long().cpu()
        n, k = logits.shape
        if n == 0:
            return
        logp = torch.log_softmax(logits, dim=1)
        probs = logp.exp()
        conf, pred = probs.max(1)
        self.n += n
        self.nll_sum += float(-logp[torch.arange(n), labels].sum())
        self.conf_sum += float(conf.sum())
        b = _bin_index(conf, self.num_bins)
        for row, values in enumerate((torch.ones(n, dtype=torch.float64), conf, (pred == labels).double())):
            self.top[row].index_add_(0, b, values)
        if self.per_class is None:
            self.per_class = torch.zeros(3, k, self.num_bins, dtype=torch.float64)
        onehot = torch.zeros(n, k, dtype=torch.float64)
        onehot[torch.arange(n), labels] = 1.0
        flat = (torch.arange(k) * self.num_bins + _bin_index(probs, self.num_bins)).reshape(-1)
        for row, values in enumerate((torch.ones(n * k, dtype=torch.float64), probs.reshape(-1), onehot.reshape(-1))):
            self.per_class[row].view(-1).index_add_(0, flat, values)

    @staticmethod
    def _ece(count, value_sum, target_sum, total):
        """sum_b |b| / N * |mean target(b) - mean value(b)| = sum_b |target_sum - value_sum| / N."""
        return float((target_sum - value_sum).abs().sum(-1).div(max(total, 1)).mean()) if count.numel() else 0.0

    def result(self):
        """{"ece", "classwise_ece", "confidence" (percent), "nll" (nats)}; zeros when nothing was seen."""
        if self.n == 0:
            return {"ece": 0.0, "classwise_ece": 0.0, "confidence": 0.0, "nll": 0.0}
        count, conf_sum, correct_sum = self.top
        cc, p_sum, y_sum = self.per_class
        return {"ece": 100.0 * self._ece(count, conf_sum, correct_sum, self.n),
                "classwise_ece": 100.0 * self._ece(cc, p_sum, y_sum, self.n),
                "confidence": 100.0 * self.conf_sum / self.n,
                "nll": self.nll_sum / self.n}


def result_lines(metrics):
    """The log lines of the calibration metrics, printed after Dassl's result lines."""
    return [f"* ece: {metrics['ece']:.2f}%", f"* classwise_ece: {metrics['classwise_ece']:.2f}%",
            f"* confidence: {metrics['confidence']:.2f}%", f"* nll: {metrics['nll']:.4f}"]


def sals(logits, zero_shot_logits, eps=1e-12):
    """SaLS: each row of `logits` mapped affinely onto the [min, max] range of the same row of
    `zero_shot_logits` (a row with equal logits goes to the zero-shot minimum, predicting as before)."""
    lo, hi = logits.min(1, keepdim=True).values, logits.max(1, keepdim=True).values
    zlo, zhi = zero_shot_logits.min(1, keepdim=True).values, zero_shot_logits.max(1, keepdim=True).values
    return (logits - lo) / (hi - lo).clamp_min(eps) * (zhi - zlo) + zlo


@torch.no_grad()
def zero_shot_classifier(clip_model, classnames, template):
    """[K, D] L2-normalised text features of `template` for each class (underscores read as
    spaces, as the reference zero-shot CLIP does): the zero-shot logits SaLS maps onto."""
    import clip

    encoder = clip.TextEncoder(clip_model)
    tokens = clip.tokenize([template.format(c.replace("_", " ")) for c in classnames]).to(encoder.device)
    feats = encoder.encode(tokens).float()
    return feats / feats.norm(dim=-1, keepdim=True)
