"""CromSS's sample selection, label smoothing, losses, U-Nets and the pretraining module.

Two U-Nets (Sentinel-1: 2 channels, Sentinel-2: 13 or 9) are trained on Dynamic World's noisy land-cover
masks (about 70% correct). Each branch gets a weighted segmentation loss (eq. 6: cross-entropy + Dice
against spatial-temporally smoothed labels, eq. 13-15) and a weighted KL consistency loss towards the other
branch's detached prediction (eq. 7); the total is eq. 1. The weights are the sample selection masks
(Sec. III-B): per-pixel confidences (eq. 8, 9), enhanced across modalities (eq. 10) and thresholded
(eq. 11 per class, eq. 12). ``fusion="middle"`` shares one decoder and head between the two encoders,
``"late"`` keeps two U-Nets, ``"single"`` is the single-modal baseline (segmentation loss only).

Inputs: S2 L1C clipped to mean +/- 2 std of SSL4EO-S12 and scaled to [0, 1] (Sec. IV-A; the readers do this), S1
dB clipped and scaled the same way, as the authors' downstream loaders do (the readers standardise S1, so
:func:`s1_unit_range` maps their z-scores to it).

Shapes: probabilities ``[B, C, H, W]`` (softmax over C classes), labels ``int [B, H, W]`` with negative
values marking unlabelled pixels (Dynamic World no-data, ``IGNORE_INDEX``). Everything random inside a
training step (the season, the crop, the flip and the rotation) is drawn per sample from the step's
:class:`eobook.rng.Random` source.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ... import augment
from ...data.bands import CROMSS_S2_BANDS, DW_CLASSES, S2_L1C_BANDS
from ...rng import Random, as_random
from ...runtime import choose_device
from ...train import StepContext, rampup
from .config import CromSSConfig

NUM_CLASSES = len(DW_CLASSES)
FUSIONS = ("middle", "late", "single")
#: Channel positions of the 9-band S2 set (B2-B8, B11, B12) within the 13 L1C bands.
S2_9BAND_INDEX = tuple(S2_L1C_BANDS.index(b) for b in CROMSS_S2_BANDS)


def s1_unit_range(z: torch.Tensor) -> torch.Tensor:
    """The authors' S1 input from the readers' standardised dB values z = (x - mean) / std (SSL4EO-S12 statistics):
    x clipped to mean +/- 2 std and scaled to [0, 1], i.e. clip((z + 2) / 4, 0, 1) (``data_clip_s1`` of the
    authors' downstream loaders; their pretraining read SSL4EO-S12's uint8 release divided by 255). The book
    feeds S1 so in pretraining and transfer alike."""
    return ((z + 2.0) / 4.0).clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# Sample selection (Sec. III-B)
# --------------------------------------------------------------------------------------------------
def selection_schedule(epoch: float, n_s: float, alpha_0: float) -> tuple[float, float]:
    """(alpha, gamma) at ``epoch``: alpha ramps 1 -> alpha_0 and gamma 0 -> 1 over the first n_s epochs,
    both with ``rampup(e, n_s) = exp(-5 (1 - e/n_s)^2)`` (Sec. IV-A)."""
    r = rampup(epoch, n_s)
    return 1.0 - r * (1.0 - alpha_0), r


def entity_confidence(probs: torch.Tensor) -> torch.Tensor:
    """Entity-based confidence f_e = 1 - H(p) / log C = 1 + sum_c p log p / log C (eq. 9), in [0, 1].

    Args:
        probs: softmax outputs [B, C, H, W]. Returns [B, H, W].
    """
    _check_probs(probs)
    entropy_term = torch.special.xlogy(probs, probs).sum(1)  # sum_c p log p (0 log 0 = 0), [B, H, W]
    return (1.0 + entropy_term / math.log(probs.shape[1])).clamp(0.0, 1.0)


def label_confidence(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Label-based confidence f_l = p at the noisy label's class (eq. 8); 0 where the label is missing.

    Args:
        probs: softmax outputs [B, C, H, W]; labels: int [B, H, W]. Returns [B, H, W].
    """
    _check_probs(probs)
    valid = _valid_labels(labels, probs.shape[1], probs.shape[:1] + probs.shape[2:])
    picked = probs.gather(1, labels.clamp(min=0).unsqueeze(1)).squeeze(1)
    return picked * valid


def cross_modal_enhance(f_self: torch.Tensor, f_other: torch.Tensor) -> torch.Tensor:
    """F' = (F_d + F_1 F_2) / 2 = F_d (1 + F_d') / 2 (eq. 10): agreement raises, disagreement lowers."""
    if f_self.shape != f_other.shape:
        raise ValueError(f"f_self {tuple(f_self.shape)} and f_other {tuple(f_other.shape)} differ in shape")
    return f_self * (1.0 + f_other) / 2.0


def label_selection_mask(conf: torch.Tensor, labels: torch.Tensor, alpha: float, num_classes: int) -> torch.Tensor:
    """W_l: w_i = min(1, f_i / f_c(alpha)) with a per-class threshold (eq. 11 with footnote 5).

    f_c(alpha) is the floor(alpha N_c)-th largest confidence among the N_c pixels of class c in the batch
    (at least the largest): the top alpha fraction of each class keeps weight 1, the rest is down-weighted
    in proportion to its confidence. Classes without pixels are skipped; alpha = 1 makes the threshold
    the class minimum (all weights 1). Unlabelled pixels (negative labels) get weight 0.

    Args:
        conf: label-based confidences [B, H, W] (eq. 8, optionally enhanced by eq. 10).
        labels: int [B, H, W]. alpha: selection ratio in [0, 1]. Returns weights [B, H, W] in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    valid = _valid_labels(labels, num_classes, conf.shape)
    c, y = conf[valid].double(), labels[valid]
    weights = torch.zeros_like(conf)
    if c.numel() == 0:
        return weights
    # Sort by class, confidence descending within each class (two stable sorts), so class c occupies
    # positions starts[c] .. starts[c] + N_c - 1 in descending order.
    order = torch.argsort(c, descending=True, stable=True)
    order = order[torch.argsort(y[order], stable=True)]
    counts = torch.bincount(y, minlength=num_classes)
    starts = counts.cumsum(0) - counts
    k = (alpha * counts.double()).floor().long().clamp(min=1)  # floor(alpha N_c), at least 1
    position = (starts + k - 1).clamp(max=c.numel() - 1)  # empty classes: any valid index, never used
    threshold = c[order][position][y]  # f_c(alpha) of each pixel's class
    w = torch.where(c >= threshold, torch.ones_like(c), c / threshold.clamp_min(1e-12))
    weights[valid] = w.to(weights.dtype)
    return weights


def entity_selection_mask(conf: torch.Tensor, gamma: float) -> torch.Tensor:
    """W_e: w = (1 - gamma) + gamma f_e (eq. 12); gamma ramps 0 -> 1."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma: expected a value in [0, 1], got {gamma}")
    return (1.0 - gamma) + gamma * conf


Masks = dict[str, torch.Tensor]  #: {modality: [B, H, W]}


def selection_masks_of(probs: dict[str, torch.Tensor], labels: torch.Tensor, alpha: float, gamma: float,
                       num_classes: int, enhance: bool = True) -> tuple[Masks, Masks]:
    """W_l and W_e of both modalities from their softmax outputs {"s1", "s2": [B, C, H, W]} (Fig. 5):
    confidences (eq. 8, 9), cross-modal enhancement (eq. 10; ``enhance=False``: each modality's own F),
    thresholds (eq. 11, 12). Returns ({m: W_l [B, H, W]}, {m: W_e [B, H, W]})."""
    f_l = {m: label_confidence(p, labels) for m, p in probs.items()}  # eq. 8
    f_e = {m: entity_confidence(p) for m, p in probs.items()}  # eq. 9
    other = {"s1": "s2", "s2": "s1"}
    if enhance:  # eq. 10
        f_l = {m: cross_modal_enhance(f_l[m], f_l[other[m]]) for m in f_l}
        f_e = {m: cross_modal_enhance(f_e[m], f_e[other[m]]) for m in f_e}
    w_l = {m: label_selection_mask(f, labels, alpha, num_classes) for m, f in f_l.items()}  # eq. 11
    w_e = {m: entity_selection_mask(f, gamma) for m, f in f_e.items()}  # eq. 12
    return w_l, w_e


# --------------------------------------------------------------------------------------------------
# Spatial-temporal label smoothing (Sec. III-C)
# --------------------------------------------------------------------------------------------------
def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """G * maps for every channel of [B, C, H, W]: a Gaussian of ``sigma`` px truncated at 4 sigma (sigma = 3:
    25 taps), zero padding (outside the tile there is no label)."""
    return augment.gaussian_blur(maps, sigma, radius=int(4 * sigma + 0.5), padding="zeros")


def spatial_temporal_smoothing(season_labels: torch.Tensor, season: int | torch.Tensor, num_classes: int,
                               beta: float = 0.05, mu: float = 0.15, sigma: float = 3.0) -> torch.Tensor:
    """Z' = (1 - beta - mu) Z + beta U + mu (M_s + M_t) / 2 (eq. 13-15).

    Z is the one-hot mask of the chosen season, U = 1/C, M_s = Z * G (eq. 14) and M_t = <Z>_t * G
    (eq. 15) with <Z>_t the mean one-hot over the seasons and G a Gaussian (sigma px, truncated at
    4 sigma); M_s and M_t are renormalised over classes (zero padding and unlabelled neighbours would
    otherwise make them sum to less than 1), so every labelled pixel of Z' sums to 1.

    Args:
        season_labels: int [T, H, W] (or batched [B, T, H, W]); negative values are unlabelled.
        season: index of the chosen season (int, or [B] for a batch).
    Returns:
        soft labels [C, H, W] (or [B, C, H, W]); all-zero at pixels unlabelled in the chosen season.
    """
    if not (0 <= beta and 0 <= mu and beta + mu <= 1):
        raise ValueError(f"beta, mu: expected beta, mu >= 0 and beta + mu <= 1, got beta={beta}, mu={mu}")
    batched = season_labels.ndim == 4
    if season_labels.ndim not in (3, 4):
        raise ValueError(f"season_labels: expected int [T, H, W] or [B, T, H, W], "
                         f"got shape {tuple(season_labels.shape)}")
    y = season_labels if batched else season_labels.unsqueeze(0)
    b, t = y.shape[:2]
    season = torch.as_tensor(season, device=y.device).reshape(-1).expand(b)
    if int(season.min()) < 0 or int(season.max()) >= t:
        raise ValueError(f"season: expected indices in [0, {t}), got {season.tolist()}")
    onehot = _one_hot(y, num_classes)  # [B, T, C, H, W], zeros where unlabelled
    z = onehot[torch.arange(b, device=y.device), season]  # Z(tau), [B, C, H, W]
    m_s = _renormalise(gaussian_smooth(z, sigma))  # eq. 14
    m_t = _renormalise(gaussian_smooth(onehot.mean(1), sigma))  # eq. 15
    soft = (1 - beta - mu) * z + beta / num_classes + mu * (m_s + m_t) / 2  # eq. 13
    soft = soft * z.sum(1, keepdim=True)  # unlabelled pixels carry no target
    return soft if batched else soft[0]


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int [..., H, W] -> float [..., C, H, W], all-zero where the label is negative."""
    _valid_labels(labels, num_classes, labels.shape)
    onehot = F.one_hot(labels.clamp(min=0), num_classes).float() * (labels >= 0).unsqueeze(-1)
    return onehot.movedim(-1, -3)


def _renormalise(maps: torch.Tensor) -> torch.Tensor:
    return maps / maps.sum(1, keepdim=True).clamp_min(1e-12)


# --------------------------------------------------------------------------------------------------
# Weighted losses (eq. 6, 7)
# --------------------------------------------------------------------------------------------------
def weighted_segmentation_loss(log_q: torch.Tensor, soft_labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_s(Q | Z', W_l) = weighted CE + weighted Dice (eq. 6).

    CE: sum_i w_i (-sum_c z'_ic log q_ic) / sum_i w_i (weighted average over pixels, as the authors
    aggregate). Dice: 1 - 2 sum_ic w_i z'_ic q_ic / sum_ic w_i (z'_ic + q_ic), over the whole batch.

    Args:
        log_q: log-softmax [B, C, H, W]; soft_labels Z' [B, C, H, W]; weights W_l [B, H, W] (0 = unused).
    """
    if log_q.shape != soft_labels.shape or weights.shape != log_q.shape[:1] + log_q.shape[2:]:
        raise ValueError(f"log_q {tuple(log_q.shape)}, soft_labels {tuple(soft_labels.shape)} and weights "
                         f"{tuple(weights.shape)}: expected [B, C, H, W], [B, C, H, W] and [B, H, W]")
    w = weights.unsqueeze(1)
    total = weights.sum().clamp_min(1e-12)
    ce = -(w * soft_labels * log_q).sum() / total
    q = log_q.exp()
    dice = 1 - 2 * (w * soft_labels * q).sum() / (w * (soft_labels + q)).sum().clamp_min(1e-12)
    return ce + dice


def weighted_consistency_loss(log_p: torch.Tensor, log_q: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_c(P || Q | W_e) = sum_i w_i sum_c p_ic log(p_ic / q_ic) / sum_i w_i (eq. 7, weighted average).

    Args:
        log_p: log-probabilities of the partner (the target; detached here), [B, C, H, W].
        log_q: log-probabilities being trained, [B, C, H, W]; weights W_e of the target, [B, H, W].
    """
    log_p = log_p.detach()
    kl = (log_p.exp() * (log_p - log_q)).sum(1)  # [B, H, W]
    return (weights * kl).sum() / weights.sum().clamp_min(1e-12)


# --------------------------------------------------------------------------------------------------
# Networks (Sec. III-A, Fig. 4)
# --------------------------------------------------------------------------------------------------
def create_unet(in_channels: int, num_classes: int = NUM_CLASSES, encoder: str = "resnet50", encoder_depth: int = 5,
                decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)) -> nn.Module:
    """A segmentation-models-pytorch U-Net, randomly initialised (``encoder_weights=None``)."""
    import segmentation_models_pytorch as smp

    if len(decoder_channels) != encoder_depth:
        raise ValueError(f"decoder_channels: expected {encoder_depth} values (one per encoder stage), "
                         f"got {decoder_channels}")
    unet = smp.Unet(encoder_name=encoder, encoder_weights=None, encoder_depth=encoder_depth, in_channels=in_channels,
                    classes=num_classes, decoder_channels=decoder_channels)
    drop_unused_stages(unet.encoder, encoder_depth)
    return unet


def drop_unused_stages(encoder: nn.Module, depth: int) -> None:
    """Delete the ResNet stages a shallow smp encoder never runs (smp keeps them): ``layer_k`` runs only
    when depth >= k + 1. Saves memory and start-up time in the tiny profiles; no effect at depth 5."""
    for k in range(max(depth, 1), 5):
        if hasattr(encoder, f"layer{k}"):
            delattr(encoder, f"layer{k}")


# --------------------------------------------------------------------------------------------------
# The pretraining module for eobook.train.fit
# --------------------------------------------------------------------------------------------------
class CromSS(nn.Module):
    """CromSS pretraining module: U-Nets for S1 and S2, the losses of eq. 1 and the selection masks.

    Args:
        fusion: "middle" (two encoders, one shared decoder + head), "late" (two U-Nets) or "single".
        sample_selection: weight the losses with W_l / W_e (CromSS); False gives the midF / lateF ablation.
        single_modality: the modality of ``fusion="single"`` ("s2" or "s1").
        s2_band_index: positions of the S2 input bands within the 13 L1C bands (None = all 13).
        alpha_0, rampup_epochs: final selection ratio alpha_0 and ramp length n_s (eq. 11, 12).
        beta, mu, sigma: label smoothing weights and Gaussian width in px (eq. 13-15).
        crop_size, flip_prob, rotate_prob: the random geometry applied in each step.
        networks: {modality: network} to train instead of new U-Nets: any module mapping that modality's input
            [B,C_m,H,W] to logits [B,num_classes,H,W] and holding the transferred part as ``.encoder``
            (chapter 6 passes one ViT segmenter for both modalities). Used as given (no decoder sharing).
    """

    def __init__(self, fusion: str = "middle", sample_selection: bool = True, single_modality: str = "s2",
                 s2_band_index: tuple[int, ...] | None = None, num_classes: int = NUM_CLASSES,
                 encoder: str = "resnet50", encoder_depth: int = 5,
                 decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16), alpha_0: float = 0.5,
                 rampup_epochs: float = 80, beta: float = 0.05, mu: float = 0.15, sigma: float = 3.0,
                 crop_size: int = 256, flip_prob: float = 0.5, rotate_prob: float = 0.2,
                 networks: dict[str, nn.Module] | None = None):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion: expected one of {FUSIONS}, got {fusion!r}")
        if single_modality not in ("s1", "s2"):
            raise ValueError(f"single_modality: expected 's1' or 's2', got {single_modality!r}")
        self.fusion, self.sample_selection, self.num_classes = fusion, sample_selection, num_classes
        self.modalities = (single_modality,) if fusion == "single" else ("s1", "s2")
        self.s2_band_index = tuple(s2_band_index) if s2_band_index is not None else tuple(range(len(S2_L1C_BANDS)))
        self.alpha_0, self.rampup_epochs = alpha_0, rampup_epochs
        self.beta, self.mu, self.sigma = beta, mu, sigma
        self.crop_size, self.flip_prob, self.rotate_prob = crop_size, flip_prob, rotate_prob
        if networks is not None:
            if sorted(networks) != sorted(self.modalities):
                raise ValueError(f"networks: expected one per modality {self.modalities}, got {sorted(networks)}")
            self.unets = nn.ModuleDict({m: networks[m] for m in self.modalities})
            return
        channels = {"s1": 2, "s2": len(self.s2_band_index)}
        self.unets = nn.ModuleDict({m: create_unet(channels[m], num_classes, encoder, encoder_depth, decoder_channels)
                                    for m in self.modalities})
        if fusion == "middle":  # Fig. 4(c): the S1 encoder feeds the S2 branch's decoder and head
            self.unets["s1"].decoder = self.unets["s2"].decoder
            self.unets["s1"].segmentation_head = self.unets["s2"].segmentation_head

    def encoder(self, modality: str) -> nn.Module:
        """The ResNet encoder of one modality (what is transferred downstream)."""
        return self.unets[modality].encoder

    def inputs(self, batch: dict[str, torch.Tensor], modality: str) -> torch.Tensor:
        """The network input of ``modality`` from a batch holding ``s1`` [B,2,H,W] / ``s2`` [B,13,H,W]."""
        x = batch[modality]
        return x[:, list(self.s2_band_index)] if modality == "s2" else x

    def predict(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Logits [B, C, H, W] of one modality's U-Net (S1 inputs scaled by :func:`s1_unit_range`)."""
        if modality == "s1":
            x = s1_unit_range(x)
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.unets[modality](x)

    def pick_season_and_augment(self, batch: dict[str, torch.Tensor], rng: Random | torch.Generator | None = None
                                ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """One random season per sample (Sec. IV-A, 4), soft labels (eq. 13) and the random geometry.

        Images, soft labels and labels are stacked so that one crop, flip and rotation moves them together.

        Args:
            batch: ``s1`` [B,T,2,H,W], ``s2`` [B,T,13,H,W], ``dw`` int [B,T,H,W] (all four seasons); or, from a
                packed store, ``s1`` [B,2,H,W], ``s2`` [B,13,H,W] of the season ``season`` [B] drawn by the reader.
            rng: the step context during training, a generator or None (see :func:`eobook.rng.as_random`).
        Returns:
            (images {modality: [B,C_m,s,s]}, labels int [B,s,s], soft labels [B,C,s,s]).
        """
        rng = as_random(rng)
        dw = batch["dw"]
        b, t = dw.shape[:2]
        rows = torch.arange(b, device=dw.device)
        if batch[self.modalities[0]].ndim == 4:  # a packed store's batch: the drawn season's images only
            season = batch["season"].to(dw.device)
            images = {m: self.inputs(batch, m) for m in self.modalities}
        else:
            season = rng.randint(0, t, b).to(dw.device)  # [B]
            images = {m: self.inputs({m: batch[m][rows, season]}, m) for m in self.modalities}
        soft = spatial_temporal_smoothing(dw, season, self.num_classes, self.beta, self.mu, self.sigma)
        labels = dw[rows, season].unsqueeze(1).to(soft.dtype)
        stacked = torch.cat([*images.values(), soft, labels], 1)  # [B, C_1 + C_2 + C + 1, H, W]
        stacked = augment.random_crop(stacked, self.crop_size, rng)
        stacked = augment.random_flip_rotate(stacked, self.flip_prob, self.rotate_prob, rng)
        parts = stacked.split([*(v.shape[1] for v in images.values()), self.num_classes, 1], 1)
        return dict(zip(images, parts)), parts[-1].squeeze(1).round().long(), parts[-2]

    def forward(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        images, labels, soft = self.pick_season_and_augment(batch, ctx)
        log_q = {m: F.log_softmax(self.predict(images[m], m).float(), 1) for m in self.modalities}
        valid = (labels >= 0).float()
        if self.fusion == "single":
            (m,) = self.modalities
            loss = weighted_segmentation_loss(log_q[m], soft, valid)
            return {"loss": loss, f"seg_{m}": loss.detach()}
        alpha, gamma = selection_schedule(ctx.epoch, self.rampup_epochs, self.alpha_0)
        w_l, w_e = self.selection_masks(log_q, labels, alpha, gamma)
        seg = {m: weighted_segmentation_loss(log_q[m], soft, w_l[m]) for m in self.modalities}
        # eq. 7 / Fig. 5: each branch follows the other's detached prediction, weighted by the target's W_e
        con = (weighted_consistency_loss(log_q["s1"], log_q["s2"], w_e["s1"]) +
               weighted_consistency_loss(log_q["s2"], log_q["s1"], w_e["s2"]))
        loss = seg["s1"] + seg["s2"] + con  # eq. 1
        return {"loss": loss, "seg_s1": seg["s1"].detach(), "seg_s2": seg["s2"].detach(), "consistency": con.detach(),
                "alpha": alpha, "gamma": gamma, "mean_w_l": w_l["s2"].sum().detach() / valid.sum().clamp_min(1)}

    @torch.no_grad()
    def selection_masks(self, log_q: dict[str, torch.Tensor], labels: torch.Tensor, alpha: float,
                        gamma: float) -> tuple[Masks, Masks]:
        """W_l and W_e of both modalities (Fig. 5); all ones (W_l: on labelled pixels) without selection."""
        valid = (labels >= 0).float()
        if not self.sample_selection:
            return {m: valid for m in log_q}, {m: torch.ones_like(valid) for m in log_q}
        return selection_masks_of({m: v.exp() for m, v in log_q.items()}, labels, alpha, gamma, self.num_classes)


def s2_band_index(cfg: CromSSConfig) -> tuple[int, ...]:
    """Positions of the profile's S2 input bands within the 13 L1C bands (``s2_bands`` 13 or 9)."""
    return S2_9BAND_INDEX if cfg.s2_bands == 9 else tuple(range(len(S2_L1C_BANDS)))


def build_module(cfg: CromSSConfig) -> CromSS:
    """The :class:`CromSS` module a profile describes (channels_last on CUDA)."""
    module = CromSS(fusion=cfg.fusion, sample_selection=cfg.sample_selection, single_modality=cfg.single_modality,
                    s2_band_index=s2_band_index(cfg), num_classes=cfg.num_classes,
                    encoder=cfg.encoder, encoder_depth=cfg.encoder_depth, decoder_channels=cfg.decoder_channels,
                    alpha_0=cfg.alpha_0, rampup_epochs=cfg.rampup_epochs, beta=cfg.beta, mu=cfg.mu,
                    sigma=cfg.smoothing_sigma, crop_size=cfg.crop_size, flip_prob=cfg.flip_prob,
                    rotate_prob=cfg.rotate_prob)
    if choose_device(cfg.device).type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    return module


def model_meta(cfg: CromSSConfig) -> dict[str, object]:
    """Model-shape fields that a checkpoint must share with this run."""
    return {"fusion": cfg.fusion, "sample_selection": cfg.sample_selection, "encoder": cfg.encoder,
            "encoder_depth": cfg.encoder_depth, "decoder_channels": list(cfg.decoder_channels),
            "s2_bands": cfg.s2_bands, "single_modality": cfg.single_modality}


def _check_probs(probs: torch.Tensor) -> None:
    if probs.ndim != 4 or probs.shape[1] < 2:
        raise ValueError(f"probs: expected softmax outputs [B, C, H, W] with C >= 2, got shape {tuple(probs.shape)}")


def _valid_labels(labels: torch.Tensor, num_classes: int, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Boolean mask of labelled pixels; refuses labels >= num_classes, float labels or a shape mismatch."""
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels: expected an integer tensor, got {labels.dtype}")
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(f"labels: expected shape {tuple(shape)}, got {tuple(labels.shape)}")
    if labels.numel() and int(labels.max()) >= num_classes:
        raise ValueError(f"labels: class ids must be < num_classes={num_classes} (negative = unlabelled), "
                         f"got {int(labels.max())}")
    return labels >= 0
