"""The networks of Cardiac Copilot: encoder E, guidance layer G with plane queries, Cardiac Dreamer I.

Shapes (B = batch, C = encoder channels, N = feature tokens = (input_size / 32)²):

- ``FrameEncoder``: grayscale frame (B, 1, H, W) float → feature tokens f (B, N, C). A 2-D MONAI
  ResNet (basic blocks, 7×7 stride-2 stem, max-pool; 512 channels for ResNet-18/34), without its
  pooling and classifier so that the spatial map is kept for the world model.
- ``GuidanceHead``: G(f, q_i). The tokens are average-pooled to one C-vector, concatenated with the
  learnable query of the chosen plane (a row of an embedding table: the paper's one-hot plane
  selection times a learned matrix), and passed through FC 2048 → ReLU → FC 512 → ReLU → FC 6.
  The output is the *normalised* action a / action_scale.
- ``CardiacDreamer``: I(f_t1, a(t1→t2)) → f'_t2. A post-norm transformer encoder ("original
  transformer", Vaswani et al.) over N + 1 tokens: the N feature tokens projected to ``dreamer_dim``
  with a learned positional embedding, plus one action token (an MLP of the normalised 6-D motion)
  with its own learned type embedding. The outputs at the N feature positions are projected back to
  C and *added* to f_t1; the output projection starts at zero, so an untrained Dreamer imagines "no
  change" and training starts from the policy's behaviour.

The full models (``GuidancePolicy``, ``DreamerPolicy``) take uint8 or float frames in grey levels
0..255, normalise them inside (so an exported graph takes the raw frame), and return actions in
physical units (mm, degrees).
"""

import torch
from torch import nn

from echo_guidance.models.config import ENCODER_LAYERS, ModelConfig, ModelConfigError


class FrameEncoder(nn.Module):
    """ResNet feature encoder E on a single-channel frame, returning spatial feature tokens."""

    def __init__(self, arch='resnet34', width=1.0):
        """Build a MONAI 2-D ResNet of depth ``arch`` with channel multiplier ``width``."""
        super().__init__()
        from monai.networks.nets import ResNet

        if arch not in ENCODER_LAYERS:
            raise ModelConfigError(f'unknown encoder {arch!r}: expected one of {", ".join(ENCODER_LAYERS)}')
        self.resnet = ResNet(
            block='basic',
            layers=list(ENCODER_LAYERS[arch]),
            block_inplanes=[64, 128, 256, 512],
            spatial_dims=2,
            n_input_channels=1,
            conv1_t_size=7,
            conv1_t_stride=2,
            widen_factor=width,
            feed_forward=False,
        )
        self.out_channels = int(512 * width)

    def forward_map(self, images):
        """Feature map (B, C, H/32, W/32) of normalised float frames (B, 1, H, W)."""
        r = self.resnet
        x = r.act(r.bn1(r.conv1(images)))
        x = r.maxpool(x)
        return r.layer4(r.layer3(r.layer2(r.layer1(x))))

    def forward(self, images):
        """Feature tokens (B, N, C) of normalised float frames (B, 1, H, W)."""
        fmap = self.forward_map(images)
        return fmap.flatten(2).transpose(1, 2)


class GuidanceHead(nn.Module):
    """Guidance layer G(f, q_i): pooled features ⊕ plane query → FC layers → normalised 6-D action."""

    def __init__(self, feature_dim, num_planes, query_dim=512, hidden=(2048, 512), dropout=0.0):
        """Create the plane queries and the fully connected layers (hidden sizes, then 6)."""
        super().__init__()
        self.queries = nn.Embedding(num_planes, query_dim)
        nn.init.normal_(self.queries.weight, std=0.02)
        layers, width = [], feature_dim + query_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, 6))
        self.mlp = nn.Sequential(*layers)
        self.num_planes = num_planes

    def forward(self, tokens, plane):
        """Normalised action (B, 6) from tokens (B, N, C) and plane indices (B,) int64."""
        pooled = tokens.mean(dim=1)
        query = self.queries(plane)
        return self.mlp(torch.cat([pooled, query.to(pooled.dtype)], dim=1))


class DistanceHead(nn.Module):
    """The stop judgement's head D(f, q_i): pooled features ⊕ its own plane query → distance (≥ 0).

    It answers "how far is this probe from the plane?" in units of the success window
    (:func:`echo_guidance.geometry.plane_distance`), learned from the same labels as the action but
    with its own query and layers, so "plane reached" does not rest on the action regressor saying zero.
    """

    def __init__(self, feature_dim, num_planes, query_dim=128, hidden=256):
        """Create the plane queries and a two-layer MLP ending in a softplus."""
        super().__init__()
        self.queries = nn.Embedding(num_planes, query_dim)
        nn.init.normal_(self.queries.weight, std=0.02)
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim + query_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)
        )

    def forward(self, tokens, plane):
        """Distance (B,) from tokens (B, N, C) and plane indices (B,)."""
        pooled = tokens.mean(dim=1)
        query = self.queries(plane).to(pooled.dtype)
        return nn.functional.softplus(self.mlp(torch.cat([pooled, query], dim=1))[:, 0])


class CardiacDreamer(nn.Module):
    """World model I(f_t1, a(t1→t2)) → f'_t2: a transformer over feature tokens and an action token."""

    def __init__(self, feature_dim, num_tokens, dim=512, layers=4, heads=8, ff_dim=2048, dropout=0.1):
        """Create projections, embeddings and a post-norm transformer encoder of ``layers`` layers."""
        super().__init__()
        self.in_proj = nn.Linear(feature_dim, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        nn.init.normal_(self.pos_embed, std=0.02)
        self.action_embed = nn.Sequential(nn.Linear(6, dim), nn.GELU(), nn.Linear(dim, dim))
        self.action_type = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.action_type, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=dim,
            nhead=heads,
            dim_feedforward=ff_dim,
            dropout=dropout,
            activation='relu',
            batch_first=True,
            norm_first=False,
        )
        self.transformer = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.out_proj = nn.Linear(dim, feature_dim)
        # Zero-initialised so that an untrained Dreamer returns f_t1 unchanged.
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)
        self.num_tokens = num_tokens

    def forward(self, tokens, motion_normalised):
        """Imagined tokens f'_t2 (B, N, C) after moving the probe by the normalised motion (B, 6)."""
        if not torch.jit.is_tracing() and tokens.shape[1] != self.num_tokens:
            raise ModelConfigError(
                f'Cardiac Dreamer was built for {self.num_tokens} feature tokens, got {tokens.shape[1]} '
                f'(input size differs from model.input_size?)'
            )
        x = self.in_proj(tokens) + self.pos_embed
        a = self.action_embed(motion_normalised.to(x.dtype)).unsqueeze(1) + self.action_type
        h = self.transformer(torch.cat([a, x], dim=1))
        return tokens + self.out_proj(h[:, 1:])


class GuidancePolicy(nn.Module):
    """The baseline policy π(S, plane) = G(E(S), q_plane), returning physical actions.

    Buffers hold the fixed input normalisation and the per-axis action scale, so a state dict (and
    an exported graph) carries them.
    """

    def __init__(self, config: ModelConfig):
        """Build encoder and guidance head from ``config``."""
        super().__init__()
        self.config = config
        self.encoder = FrameEncoder(config.encoder, config.encoder_width)
        self.head = GuidanceHead(
            self.encoder.out_channels,
            len(config.planes),
            config.query_dim,
            config.head_hidden,
            config.head_dropout,
        )
        self.distance = (
            DistanceHead(self.encoder.out_channels, len(config.planes), config.query_dim)
            if config.distance_head
            else None
        )
        self.register_buffer('pixel_mean', torch.tensor(float(config.pixel_mean)))
        self.register_buffer('pixel_std', torch.tensor(float(config.pixel_std)))
        self.register_buffer('action_scale', torch.tensor(config.action_scale, dtype=torch.float32))

    def normalise_images(self, images):
        """Grey levels 0..255 (uint8 or float, (B, 1, H, W)) → standardised float32 frames."""
        size = self.config.input_size
        if not torch.jit.is_tracing() and (
            images.dim() != 4 or images.shape[1] != 1 or images.shape[2] != size or images.shape[3] != size
        ):
            raise ValueError(
                f'expected frames of shape (batch, 1, {size}, {size}), got {tuple(images.shape)}'
            )
        x = images.float() / 255.0
        return (x - self.pixel_mean) / self.pixel_std

    def check_planes(self, plane):
        """Raise ValueError when a plane index is outside the model's query table (eager mode only)."""
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        if plane.dtype not in (torch.int64, torch.int32):
            raise ValueError(f'plane indices must be integers, got {plane.dtype}')
        if plane.numel() and (int(plane.min()) < 0 or int(plane.max()) >= len(self.config.planes)):
            raise ValueError(
                f'plane index out of range: model knows {len(self.config.planes)} planes '
                f'{self.config.planes}, got indices {plane.tolist()}'
            )

    def encode(self, images):
        """Feature tokens f = E(S) (B, N, C) of frames in grey levels."""
        return self.encoder(self.normalise_images(images))

    def policy_normalised(self, tokens, plane):
        """Normalised action G(f, q_plane) (B, 6)."""
        return self.head(tokens, plane.long())

    def predict_distance(self, tokens, plane):
        """The stop judgement's distance to the plane (B,) (needs ``model.distance_head``)."""
        if self.distance is None:
            raise ModelConfigError('this model has no distance head (model.distance_head is false)')
        return self.distance(tokens, plane.long())

    def to_physical(self, normalised):
        """Normalised action → mm and degrees."""
        return normalised.float() * self.action_scale

    def to_normalised(self, physical):
        """Mm and degrees → normalised action."""
        return physical.float() / self.action_scale

    def forward(self, images, plane):
        """Action (B, 6) in mm / degrees from frames (B, 1, H, W) in grey levels and plane indices (B,)."""
        self.check_planes(plane)
        return self.to_physical(self.policy_normalised(self.encode(images), plane.long()))


class DreamerPolicy(GuidancePolicy):
    """The policy jointly trained with Cardiac Dreamer; at inference it refines its own action.

    Inference (one frame): a0 = π(S); the Dreamer imagines the features at the pose the probe would
    reach with a0, f' = I(E(S), a0); the policy reads the residual a_res = G(f', q) from the imagined
    state; the output is the composition a = U⁻¹(U(a0) · U(a_res)) (the paper's Eq. 6 with the
    predicted motion in place of the ground-truth one).
    """

    def __init__(self, config: ModelConfig):
        """Build the policy and the Dreamer from ``config``."""
        super().__init__(config)
        self.dreamer = CardiacDreamer(
            self.encoder.out_channels,
            config.feature_grid**2,
            config.dreamer_dim,
            config.dreamer_layers,
            config.dreamer_heads,
            config.dreamer_ff,
            config.dreamer_dropout,
        )

    def imagine(self, tokens, motion_physical):
        """F' = I(f, a(t1→t2)) with the motion in mm / degrees."""
        return self.dreamer(tokens, self.to_normalised(motion_physical))

    def compose(self, motion_physical, action_physical):
        """Eq. 6: U⁻¹(U(motion) · U(action)) in float32, differentiable."""
        from echo_guidance.geometry import compose_actions

        with torch.autocast(device_type=motion_physical.device.type, enabled=False):
            return compose_actions(motion_physical.float(), action_physical.float())

    def refine(self, tokens, plane):
        """Return (a0, a_res, a) in mm / degrees for tokens (B, N, C): policy, residual, composed action."""
        a0 = self.to_physical(self.policy_normalised(tokens, plane))
        imagined = self.imagine(tokens, a0)
        a_res = self.to_physical(self.policy_normalised(imagined, plane))
        return a0, a_res, self.compose(a0, a_res)

    def forward(self, images, plane):
        """Refined action (B, 6) in mm / degrees from frames in grey levels and plane indices (B,)."""
        self.check_planes(plane)
        return self.refine(self.encode(images), plane.long())[2]


def build_model(config):
    """Build the network a ModelConfig (or its dict form) describes."""
    if not isinstance(config, ModelConfig):
        config = ModelConfig.from_dict(config)
    return DreamerPolicy(config) if config.kind == 'dreamer' else GuidancePolicy(config)


def architecture_digest(model):
    """SHA-256 over the names, shapes and dtypes of a model's parameters and buffers.

    Two models with the same digest have interchangeable state dicts; the digest changes when the
    code builds a different architecture from the same config.
    """
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f'{name}:{tuple(tensor.shape)}:{tensor.dtype};'.encode())
    return h.hexdigest()


def count_parameters(model):
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
