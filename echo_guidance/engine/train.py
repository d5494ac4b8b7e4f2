"""Training loop: AdamW, warm-up + cosine LR, mixed precision, DDP, checkpoints and resume, metrics log.

Run with one process (``echo-guidance train CONFIG``) or data-parallel with torchrun
(``torchrun --nproc_per_node 2 -m echo_guidance.cli train CONFIG``): the process group is set up
from torchrun's environment (gloo on CPU, NCCL on CUDA). ``train.batch_size`` is the *global* batch;
each rank loads ``batch_size / world_size`` samples, so one and two processes follow the same
optimisation (up to BatchNorm statistics, which each rank computes on its own share).

Outputs in ``train.out_dir``: ``last.pt`` (every ``ckpt_every`` steps and at the end), ``best.pt``
(lowest validation score), ``metrics.jsonl`` (one JSON object per log line: ``kind`` train or val),
``config.yaml`` (the resolved config).
"""

import contextlib
import json
import math
import os
import pathlib
import sys
import time

import numpy as np
import torch
from torch import nn

from echo_guidance.data.dataset import GuidanceDataset
from echo_guidance.data.loader import GuidanceBatches, make_loader
from echo_guidance.engine.checkpoint import (
    CheckpointError,
    file_sha256,
    load_model,
    read_checkpoint,
    save_checkpoint,
    warm_start,
)
from echo_guidance.engine.config import TrainConfig
from echo_guidance.models.config import ACTION_AXES, config_differences
from echo_guidance.models.losses import baseline_loss, dreamer_loss, wrapped_action_error
from echo_guidance.models.networks import build_model, count_parameters


class LossModule(nn.Module):
    """Model + loss in one forward, so DistributedDataParallel sees one call per step."""

    def __init__(self, model, loss_cfg):
        """Wrap ``model`` with the loss the config selects (Eq. 2 or Eq. 7)."""
        super().__init__()
        self.model = model
        self.loss_cfg = loss_cfg

    def forward(self, batch):
        """Return (loss, {term: detached value})."""
        c = self.loss_cfg
        if self.model.config.kind == 'dreamer':
            return dreamer_loss(
                self.model, batch, c.beta, c.balanced, c.policy_weight, c.latent_weight, c.distance_weight
            )
        return baseline_loss(self.model, batch, c.beta, c.balanced, c.distance_weight)


def distributed_context():
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) without it."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    return int(os.environ.get('RANK', '0')), int(os.environ.get('LOCAL_RANK', '0')), world


def select_device(name, local_rank):
    """torch.device for ``auto``/``cpu``/``cuda``; ``cuda`` without a GPU is an error."""
    if name == 'cuda' or (name == 'auto' and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError('train.device is cuda but no CUDA device is available')
        torch.cuda.set_device(local_rank)
        return torch.device('cuda', local_rank)
    return torch.device('cpu')


def amp_dtype(mode, device):
    """Autocast dtype for train.amp on ``device`` (None = full precision)."""
    if mode == 'none':
        return None
    if mode == 'auto':
        if device.type == 'cuda':
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16
    if mode == 'fp16' and device.type == 'cpu':
        raise RuntimeError('train.amp fp16 is for CUDA; use bf16 on CPU')
    return torch.bfloat16 if mode == 'bf16' else torch.float16


def autocast(device, dtype):
    """Autocast context for ``dtype``, or a no-op when it is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def lr_lambda(total_steps, warmup_steps, min_ratio):
    """Linear warm-up then cosine annealing to ``min_ratio`` of the base LR, per optimiser step."""

    def factor(step):
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def parameter_groups(model, weight_decay):
    """AdamW groups: weight decay on weight matrices and kernels, none on biases, norms and embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or 'queries' in name or 'pos_embed' in name or 'action_type' in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]


def to_device(batch, device, channels_last=False):
    """Move a batch dict to ``device``."""
    out = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True)
        if channels_last and key.startswith('image'):
            value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


@torch.no_grad()
def predict_split(
    model, root, split, batch_size=64, max_batches=None, size=None, device='cpu', dtype=None, seed=0
):
    """Run a model over a split (or a fixed random subset of ``max_batches`` batches).

    Returns:
        dict of numpy arrays: ``pred`` (N, 6) model output, ``target`` (N, 6), ``plane`` (dataset index),
        ``index``
        and, for Dreamer models, ``pred_policy`` (the policy head alone, before refinement); for
        models with a distance head, ``distance`` (N,) its answers.
    """
    device = torch.device(device)
    model.eval()
    batches = GuidanceBatches(root, split, size=size or model.config.input_size, planes=model.config.planes)
    order = np.arange(len(batches))
    if max_batches is not None:
        order = np.sort(np.random.default_rng(seed).permutation(len(batches))[: max_batches * batch_size])
    out = {'pred': [], 'target': [], 'plane': [], 'index': []}
    dreamer = model.config.kind == 'dreamer'
    if dreamer:
        out['pred_policy'] = []
    if model.distance is not None:
        out['distance'] = []
    for start in range(0, len(order), batch_size):
        batch = to_device(batches[order[start : start + batch_size].tolist()], device)
        with autocast(device, dtype):
            tokens = model.encode(batch['image'])
            if dreamer:
                a0, _, a = model.refine(tokens, batch['plane'])
                out['pred_policy'].append(a0.float().cpu())
            else:
                a = model.to_physical(model.policy_normalised(tokens, batch['plane']))
            if model.distance is not None:
                out['distance'].append(model.predict_distance(tokens, batch['plane']).float().cpu())
        out['pred'].append(a.float().cpu())
        out['target'].append(batch['action'].cpu())
        out['plane'].append(batch['plane'].cpu())
        out['index'].append(batch['index'].cpu())
    result = {k: torch.cat(v).numpy() for k, v in out.items()}
    # Report planes as dataset indices (GUIDANCE_PLANES order), whatever the model's query order.
    result['plane'] = np.asarray(GuidanceDataset(root).split(split)['plane'])[result['index']]
    return result


def validation_metrics(pred):
    """Per-axis MAE, mean translation-norm and mean rotation MAE, and a scalar ``score`` (lower is better)."""
    err = np.abs(
        wrapped_action_error(torch.from_numpy(pred['pred']), torch.from_numpy(pred['target'])).numpy()
    )
    metrics = {f'mae_{axis}': float(err[:, i].mean()) for i, axis in enumerate(ACTION_AXES)}
    metrics['translation_norm_mm'] = float(
        np.linalg.norm(pred['pred'][:, :3] - pred['target'][:, :3], axis=1).mean()
    )
    metrics['score'] = float(err[:, :3].mean() + err[:, 3:].mean())
    if 'pred_policy' in pred:
        err0 = np.abs(
            wrapped_action_error(
                torch.from_numpy(pred['pred_policy']), torch.from_numpy(pred['target'])
            ).numpy()
        )
        metrics['policy_head_score'] = float(err0[:, :3].mean() + err0[:, 3:].mean())
    if 'distance' in pred:
        metrics.update(distance_metrics(pred['distance'], pred['target']))
    metrics['samples'] = int(len(err))
    return metrics


def distance_metrics(distance, target_actions, tolerance=(5.0, 5.0), threshold=1.0):
    """How well a distance head judges "within the window": MAE, and "reached" errors at ``threshold``.

    Returns ``distance_mae`` (over samples with true distance < 2, where it matters), and, taking
    ``distance < threshold`` as "reached": ``false_reached`` (share of samples outside the window
    called reached) and ``missed_reached`` (share of samples inside called not reached).
    """
    from echo_guidance.geometry import plane_distance

    truth = np.asarray(plane_distance(np.asarray(target_actions, dtype=np.float64), *tolerance))
    distance = np.asarray(distance, dtype=np.float64)
    near = truth < 2.0
    inside = truth <= 1.0
    called = distance < threshold
    return {
        'distance_mae': float(np.abs(distance[near] - truth[near]).mean()) if near.any() else math.nan,
        'false_reached': float((called & ~inside).sum() / max(1, (~inside).sum())),
        'missed_reached': float((~called & inside).sum() / max(1, inside.sum())),
    }


class MetricsLog:
    """Append-only JSONL metrics file (rank 0 only)."""

    def __init__(self, path, enabled=True):
        """Open ``path`` for appending when enabled."""
        self.enabled = enabled
        self.path = pathlib.Path(path)
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record):
        """Append one record."""
        if self.enabled:
            with open(self.path, 'a') as f:
                f.write(json.dumps(record) + '\n')


def train(cfg: TrainConfig, resume=None, progress=True):
    """Train the model ``cfg`` describes; return a summary dict (rank 0's view).

    Args:
        cfg: Parsed training config.
        resume: None, a checkpoint path, or ``'auto'`` (``out_dir/last.pt`` when it exists).
        progress: Show progress on rank 0 (a bar on a terminal, plain lines in a log).
    """
    import yaml

    from echo_guidance.progress import progress_bar

    rank, local_rank, world = distributed_context()
    device = select_device(cfg.train.device, local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo')
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    elif device.type == 'cpu' and world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    is_main = rank == 0
    tc = cfg.train
    if tc.batch_size % world:
        raise ValueError(f'train.batch_size {tc.batch_size} is not divisible by the {world} processes')
    out_dir = pathlib.Path(tc.out_dir)

    dataset = GuidanceDataset(cfg.data.dir)
    stats = dataset.manifest.get('train_stats') or {}
    model_cfg = cfg.model_config(stats)

    ckpt = None
    if resume == 'auto':
        resume = out_dir / 'last.pt' if (out_dir / 'last.pt').is_file() else None
    if resume:
        ckpt = read_checkpoint(resume)
        diffs = config_differences(ckpt['model_config'], model_cfg)
        if diffs:
            raise CheckpointError(
                f'cannot resume from {resume}: its model differs from {cfg.source}: ' + '; '.join(diffs)
            )
        model, _ = load_model(ckpt)
        model.train()
    else:
        torch.manual_seed(cfg.seed)
        model = build_model(model_cfg)
        if cfg.train.init_from:
            started_from = warm_start(model, cfg.train.init_from)
            if is_main:
                print(
                    f'{cfg.name}: weights from {cfg.train.init_from} ({started_from["copied"]} tensors; '
                    f'new: {", ".join(started_from["skipped"]) or "none"})',
                    file=sys.stderr,
                )
    model.to(device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(tc.amp, device)

    loss_module = LossModule(model, cfg.loss)
    if world > 1:
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[local_rank] if device.type == 'cuda' else None
        )

    pairs = model_cfg.kind == 'dreamer'
    loader, sampler, batches = make_loader(
        cfg.data.dir,
        cfg.data.train_split,
        tc.batch_size // world,
        pairs=pairs,
        with_image_t2=pairs and cfg.loss.latent_weight > 0,
        size=model_cfg.input_size,
        seed=cfg.seed,
        rank=rank,
        world_size=world,
        num_workers=cfg.data.num_workers,
        max_pair_gap_s=cfg.data.max_pair_gap_s,
        planes=model_cfg.planes,
    )
    steps_per_epoch = len(sampler)
    total = tc.steps if tc.steps is not None else max(1, math.ceil(tc.epochs * steps_per_epoch))

    optimizer = torch.optim.AdamW(parameter_groups(model, tc.weight_decay), lr=tc.lr, betas=tc.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total, tc.warmup_steps, tc.min_lr / tc.lr)
    )
    scaler = torch.amp.GradScaler('cuda') if dtype == torch.float16 else None
    start_step = 0
    if ckpt is not None:
        if 'optimizer_state' not in ckpt:
            raise CheckpointError(f'{resume} holds weights only (no optimiser state); it cannot be resumed')
        optimizer.load_state_dict(ckpt['optimizer_state'])
        scheduler.load_state_dict(ckpt['scheduler_state'])
        if scaler is not None and 'scaler_state' in ckpt:
            scaler.load_state_dict(ckpt['scaler_state'])
        if 'rng_state' in ckpt:
            torch.set_rng_state(ckpt['rng_state'])
        start_step = int(ckpt['step'])
        if start_step >= total:
            raise ValueError(f'{resume} is at step {start_step}, the run has {total} steps: nothing to do')

    dataset_info = {
        'dir': str(cfg.data.dir),
        'size': dataset.size,
        'manifest_sha256': file_sha256(pathlib.Path(cfg.data.dir) / 'manifest.json'),
    }
    log = MetricsLog(out_dir / 'metrics.jsonl', enabled=is_main)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / 'config.yaml').write_text(
            yaml.safe_dump({**cfg.to_dict(), 'resolved_model': model_cfg.to_dict()}, sort_keys=False)
        )
        log.write(
            {
                'kind': 'start',
                'step': start_step,
                'total_steps': total,
                'world_size': world,
                'device': str(device),
                'amp': str(dtype),
                'parameters': count_parameters(model),
                'steps_per_epoch': steps_per_epoch,
                'train_samples': len(batches),
                'threads': torch.get_num_threads(),
                'resumed_from': str(resume) if resume else None,
            }
        )

    best_score = float(ckpt['metrics'].get('best_score', math.inf)) if ckpt else math.inf
    last_val = {}
    if is_main and not dataset.manifest['splits'].get(cfg.data.val_split, {}).get('samples'):
        message = f'validation split {cfg.data.val_split!r} is empty: no validation metrics and no best.pt'
        log.write({'kind': 'warning', 'step': start_step, 'message': message})
        print(f'warning: {message}', file=sys.stderr)

    def checkpoint(name, step, epoch):
        save_checkpoint(
            out_dir / name,
            model,
            step,
            epoch,
            cfg.to_dict(),
            dataset_info,
            {**last_val, 'best_score': best_score},
            optimizer,
            scheduler,
            scaler,
        )

    # A bar on a terminal, plain lines in a log file (echo_guidance.progress).
    bar = progress_bar(total, cfg.name, 'step', initial=start_step, enabled=progress and is_main)
    step = start_step
    epoch = step // steps_per_epoch
    window = {'loss': 0.0, 'n': 0, 'data_s': 0.0, 'step_s': 0.0, 'terms': {}}
    t_run = time.perf_counter()
    history = []
    model.train()
    while step < total:
        sampler.set_epoch(epoch)
        batches.set_epoch(epoch)
        skip = step - epoch * steps_per_epoch
        it = iter(loader)
        for _ in range(skip):  # resume mid-epoch: same batches as an uninterrupted run
            next(it)
        t0 = time.perf_counter()
        for batch in it:
            t1 = time.perf_counter()
            batch = to_device(batch, device, tc.channels_last)
            with autocast(device, dtype):
                loss, terms = loss_module(batch)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if tc.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            step += 1
            t2 = time.perf_counter()
            if world > 1:  # log the global-batch loss, not this rank's share
                reduced = torch.stack([loss.detach().float()] + [v.float() for v in terms.values()])
                torch.distributed.all_reduce(reduced)
                reduced /= world
                loss_value = float(reduced[0])
                terms = dict(zip(terms, reduced[1:]))
            else:
                loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f'loss became {loss_value} at step {step}; lower train.lr or check the data'
                )
            window['loss'] += loss_value
            window['n'] += 1
            window['data_s'] += t1 - t0
            window['step_s'] += t2 - t1
            for k, v in terms.items():
                window['terms'][k] = window['terms'].get(k, 0.0) + float(v)
            bar.update(1)
            bar.set_postfix(loss=f'{loss_value:.4f}', lr=f'{scheduler.get_last_lr()[0]:.2e}')
            if step % tc.log_every == 0 or step == total:
                n = window['n']
                record = {
                    'kind': 'train',
                    'step': step,
                    'epoch': epoch,
                    'lr': scheduler.get_last_lr()[0],
                    'loss': window['loss'] / n,
                    **{f'loss_{k}': v / n for k, v in window['terms'].items()},
                    'data_s': window['data_s'] / n,
                    'step_s': window['step_s'] / n,
                    'samples_per_s': tc.batch_size * n / max(1e-9, window['data_s'] + window['step_s']),
                    'elapsed_s': time.perf_counter() - t_run,
                }
                log.write(record)
                history.append(record)
                window = {'loss': 0.0, 'n': 0, 'data_s': 0.0, 'step_s': 0.0, 'terms': {}}
            if is_main and (step % tc.val_every == 0 or step == total):
                last_val = run_validation(model, cfg, device, dtype)
                if last_val:
                    last_val['step'] = step
                    log.write({'kind': 'val', **last_val})
                    if last_val['score'] < best_score:
                        best_score = last_val['score']
                        checkpoint('best.pt', step, epoch)
                model.train()
            if is_main and (step % tc.ckpt_every == 0 or step == total):
                checkpoint('last.pt', step, epoch)
            if step >= total:
                break
            t0 = time.perf_counter()
        else:
            epoch += 1
            continue
        break
    bar.close()
    if world > 1:
        torch.distributed.barrier()
    summary = {
        'steps': step,
        'out_dir': str(out_dir),
        'best_score': best_score,
        'last_val': last_val,
        'history': history,
        'world_size': world,
        'rank': rank,
    }
    if is_main:
        log.write(
            {'kind': 'end', 'step': step, 'elapsed_s': time.perf_counter() - t_run, 'best_score': best_score}
        )
    return summary


def run_validation(model, cfg, device, dtype):
    """Validation metrics on a fixed subset of the validation split; {} when that split is empty."""
    dataset = GuidanceDataset(cfg.data.dir)
    if dataset.manifest['splits'].get(cfg.data.val_split, {}).get('samples', 0) == 0:
        return {}
    pred = predict_split(
        model,
        cfg.data.dir,
        cfg.data.val_split,
        batch_size=cfg.train.batch_size,
        max_batches=cfg.train.val_batches,
        device=device,
        dtype=dtype,
        seed=cfg.seed,
    )
    return validation_metrics(pred)
