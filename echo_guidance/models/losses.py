"""Training losses: the paper's Eq. 2 (baseline) and Eq. 7 (policy jointly with Cardiac Dreamer).

All losses are Smooth-L1 on the *normalised* action error: the difference between predicted and
ground-truth action, with rotation components wrapped to (-180°, 180°], divided per axis by the
model's ``action_scale``. ``beta`` is the Smooth-L1 transition point in those normalised units.

Eq. 2 averages first within each demonstration, then over demonstrations. With minibatches drawn
uniformly over samples, weighting each sample by ``N / (D · |d|)`` (N samples, D demonstrations, |d|
the length of its demonstration) makes the batch mean an unbiased estimate of Eq. 2; the data
loader supplies that weight (``weight``), and 1 gives the plain sample mean.
"""

import torch
import torch.nn.functional as F


def wrapped_action_error(pred, target):
    """Pred − target (…, 6) with the rotation components wrapped to (-180, 180] degrees."""
    diff = pred.float() - target.float()
    rot = torch.remainder(diff[..., 3:] + 180.0, 360.0) - 180.0
    return torch.cat([diff[..., :3], rot], dim=-1)


def smooth_l1_action_loss(pred, target, scale, beta=0.1, weight=None):
    """Mean Smooth-L1 of the normalised, angle-wrapped action error.

    Args:
        pred: Predicted actions (B, 6), mm and degrees.
        target: Ground-truth actions (B, 6), mm and degrees.
        scale: Per-axis scale (6,), mm and degrees.
        beta: Smooth-L1 transition point in normalised units.
        weight: Optional per-sample weights (B,) (see the module docstring); None = 1.

    Returns:
        A scalar tensor.
    """
    err = wrapped_action_error(pred, target) / scale
    per_sample = F.smooth_l1_loss(err, torch.zeros_like(err), reduction='none', beta=beta).mean(dim=-1)
    if weight is not None:
        per_sample = per_sample * weight.float()
    return per_sample.mean()


def distance_loss(model, tokens, batch, beta=0.1, weight=None):
    """Smooth-L1 between the distance head's answer and the true distance to the plane, clipped.

    The true distance is :func:`echo_guidance.geometry.plane_distance` of the ground-truth action in
    units of ``model.config.distance_tolerance``, clipped to ``model.config.distance_max``.
    """
    from echo_guidance.geometry import plane_distance

    cfg = model.config
    with torch.autocast(device_type=tokens.device.type, enabled=False):
        target = plane_distance(batch['action'].float(), *cfg.distance_tolerance).clamp(max=cfg.distance_max)
    pred = model.predict_distance(tokens, batch['plane']).float()
    per_sample = F.smooth_l1_loss(pred, target, reduction='none', beta=beta)
    if weight is not None:
        per_sample = per_sample * weight.float()
    return per_sample.mean()


def baseline_loss(model, batch, beta=0.1, balanced=True, distance_weight=1.0):
    """Eq. 2 for one batch: Smooth-L1 between π(S_t) and â_t; returns (loss, {term: value}).

    A model with a distance head also learns it (:func:`distance_loss`, weight ``distance_weight``).
    """
    tokens = model.encode(batch['image'])
    pred = model.to_physical(model.policy_normalised(tokens, batch['plane']))
    weight = batch.get('weight') if balanced else None
    loss = smooth_l1_action_loss(pred, batch['action'], model.action_scale, beta, weight)
    terms = {'policy': loss.detach()}
    if model.distance is not None and distance_weight > 0:
        distance = distance_loss(model, tokens, batch, beta, weight)
        loss = loss + distance_weight * distance
        terms['distance'] = distance.detach()
    return loss, terms


def dreamer_loss(
    model, batch, beta=0.1, balanced=True, policy_weight=1.0, latent_weight=0.0, distance_weight=1.0
):
    """Eq. 7 for one batch of pairs, plus the documented extra terms; returns (loss, {term: value}).

    Terms:
        composed: Smooth-L1(a'_t1, â_t1) with a'_t1 = U⁻¹(U(â(t1→t2)) · U(a'_t2)) (Eq. 6, 7).
        imagined: Smooth-L1(a'_t2, â_t2) with a'_t2 = G(I(E(S_t1), â(t1→t2)), q) (Eq. 5, 7).
        policy: Smooth-L1(G(E(S_t1), q), â_t1), weight ``policy_weight``: the direct policy output
            that the Dreamer refines at inference; not in Eq. 7 (0 switches it off).
        latent: mean squared error between f'_t2 and E(S_t2) (target detached), weight
            ``latent_weight``; not in the paper (default 0, and then S_t2 is not encoded at all).
        distance: the distance head's loss (:func:`distance_loss`), weight ``distance_weight``, for
            models that have one.
    """
    plane = batch['plane']
    weight = batch.get('weight') if balanced else None
    scale = model.action_scale
    tokens1 = model.encode(batch['image'])
    imagined = model.imagine(tokens1, batch['motion'])
    a2 = model.to_physical(model.policy_normalised(imagined, plane))
    a1_composed = model.compose(batch['motion'], a2)
    composed = smooth_l1_action_loss(a1_composed, batch['action'], scale, beta, weight)
    imagined_term = smooth_l1_action_loss(a2, batch['action_t2'], scale, beta, weight)
    loss = composed + imagined_term
    terms = {'composed': composed.detach(), 'imagined': imagined_term.detach()}
    if policy_weight > 0:
        a1 = model.to_physical(model.policy_normalised(tokens1, plane))
        policy = smooth_l1_action_loss(a1, batch['action'], scale, beta, weight)
        loss = loss + policy_weight * policy
        terms['policy'] = policy.detach()
    if latent_weight > 0:
        with torch.no_grad():
            tokens2 = model.encode(batch['image_t2'])
        latent = F.mse_loss(imagined.float(), tokens2.float())
        loss = loss + latent_weight * latent
        terms['latent'] = latent.detach()
    if model.distance is not None and distance_weight > 0:
        distance = distance_loss(model, tokens1, batch, beta, weight)
        loss = loss + distance_weight * distance
        terms['distance'] = distance.detach()
    return loss, terms
