"""Every attention module against an independent formulation of its paper's equations.

Each reference below is written from the paper (or the authors' code) in plain tensor math,
in a different form from the module (adaptive pooling where the module uses means, the
batch-folded layout where it uses masks, loops where it uses batched MatMul), and run with the
module's own weights. Parameter counts are checked against the papers' formulas.
"""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_deploy.models.attention import get_attention, list_attention
from attn_deploy.models.attention.eca import eca_kernel_size

SHAPES = [(2, 128, 12, 12), (1, 128, 7, 13), (3, 128, 9, 5), (1, 128, 1, 1)]


def randomize(module: nn.Module) -> nn.Module:
    """Non-trivial weights everywhere (zero-initialised gates, BN statistics included)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() > 1 else 0.3) + (1.0 if "bn" in name and name.endswith("weight") else 0.0))
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module.eval()


def build(key: str, channels: int = 64, **kw: object) -> nn.Module:
    return randomize(get_attention(key).cls(channels, **kw))


def bn(x: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def w2(conv: nn.Module) -> torch.Tensor:
    """A 1x1 conv's weight as the Linear matrix (out, in)."""
    return conv.weight.reshape(conv.weight.shape[0], -1)


# --- references -------------------------------------------------------------------------


def ref_se(m, x):
    z = F.adaptive_avg_pool2d(x, 1).flatten(1)
    b1 = m.fc1.bias if m.fc1.bias is not None else 0
    b2 = m.fc2.bias if m.fc2.bias is not None else 0
    s = torch.sigmoid(F.relu(z @ w2(m.fc1).T + b1) @ w2(m.fc2).T + b2)
    return x * s[:, :, None, None]


def ref_eca(m, x):
    z = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, C)
    w = m.conv.weight.flatten()
    k, c = w.numel(), z.shape[1]
    a = torch.zeros_like(z)
    for j in range(k):  # a[c] = sum_j w[j] * z[c + j - (k-1)/2], zero outside
        off = j - (k - 1) // 2
        src = torch.arange(c) + off
        valid = (src >= 0) & (src < c)
        a[:, valid] += w[j] * z[:, src[valid]]
    return x * torch.sigmoid(a)[:, :, None, None]


def ref_ca(m, x):
    _, _, h, w = x.shape
    x_h = F.adaptive_avg_pool2d(x, (h, 1))
    x_w = F.adaptive_avg_pool2d(x, (1, w)).permute(0, 1, 3, 2)
    y = F.hardswish(bn(m.conv1(torch.cat([x_h, x_w], 2)), m.bn1))
    f_h, f_w = torch.split(y, [h, w], 2)
    return x * torch.sigmoid(m.conv_h(f_h)) * torch.sigmoid(m.conv_w(f_w.permute(0, 1, 3, 2)))


def ref_cbam(m, x):
    ch, sp = m.channel, m.spatial
    act = (lambda t: F.leaky_relu(t, ch.act.negative_slope)) if isinstance(ch.act, nn.LeakyReLU) else F.relu
    b1 = ch.fc1.bias if ch.fc1.bias is not None else 0
    b2 = ch.fc2.bias if ch.fc2.bias is not None else 0
    mlp = lambda v: act(v @ w2(ch.fc1).T + b1) @ w2(ch.fc2).T + b2  # noqa: E731
    h, w = x.shape[2:]
    mc = torch.sigmoid(mlp(F.avg_pool2d(x, (h, w)).flatten(1)) + mlp(F.max_pool2d(x, (h, w)).flatten(1)))
    x1 = x * mc[:, :, None, None]
    planes = [torch.max(x1, 1, keepdim=True)[0], torch.mean(x1, 1, keepdim=True)]
    s = sp.conv(torch.cat(planes if sp.max_first else planes[::-1], 1))
    s = bn(s, sp.bn) if isinstance(sp.bn, nn.BatchNorm2d) else s
    y = x1 * torch.sigmoid(s)
    return x + y if m.residual else y


def ref_sa(m, x):
    """SA-Net's own layout: fold the groups into the batch, chunk, GroupNorm, 2-group shuffle."""
    b, c, h, w = x.shape
    g = m.groups
    t = x.reshape(b * g, -1, h, w)
    x0, x1 = t.chunk(2, 1)
    xc = x0 * torch.sigmoid(m.cweight * F.adaptive_avg_pool2d(x0, 1) + m.cbias)
    xs = x1 * torch.sigmoid(m.sweight * F.group_norm(x1, x1.shape[1], m.gn.weight, m.gn.bias, m.gn.eps) + m.sbias)
    out = torch.cat([xc, xs], 1).reshape(b, -1, h, w)
    return out.reshape(b, 2, -1, h, w).permute(0, 2, 1, 3, 4).reshape(b, -1, h, w)


def ref_cc(m, x):
    """Per position, loops: softmax over the column (self excluded) and the row (self included)."""
    q, k, v = m.query_conv(x), m.key_conv(x), m.value_conv(x)
    b, c, h, w = x.shape
    out = torch.zeros_like(x)
    for i in range(h):
        for j in range(w):
            col = [(ii, j) for ii in range(h) if ii != i]
            row = [(i, jj) for jj in range(w)]
            keys = col + row
            e = torch.stack([(q[:, :, i, j] * k[:, :, a, bb]).sum(1) for a, bb in keys], 1)
            att = torch.softmax(e, 1)
            vals = torch.stack([v[:, :, a, bb] for a, bb in keys], 2)  # (B, C, n)
            out[:, :, i, j] = (vals * att[:, None, :]).sum(2)
    return m.gamma * out + x


def _shift_ref(t, dim, step):
    n = t.shape[dim]
    idx = [max(i - 1, 0) for i in range(n)] if step > 0 else [min(i + 1, n - 1) for i in range(n)]
    return t.index_select(dim, torch.tensor(idx))


def ref_s2mlp(m, x):
    b, c, h, w = x.shape
    t = x.permute(0, 2, 3, 1) @ w2(m.mlp1).T + m.mlp1.bias  # (B, H, W, 3C), channels last
    t = t.permute(0, 3, 1, 2)
    q = [0, c // 4, c // 2, 3 * c // 4, c]

    def shift(p, dims):
        return torch.cat([_shift_ref(p[:, q[n]:q[n + 1]], d, s) for n, (d, s) in enumerate(zip(dims, (1, -1, 1, -1)))], 1)

    parts = [shift(t[:, :c], (2, 2, 3, 3)), shift(t[:, c:2 * c], (3, 3, 2, 2)), t[:, 2 * c:]]
    a = sum(p.sum((2, 3)) for p in parts)  # (B, C): summed over branches and positions
    hat = F.gelu(a @ w2(m.split_attention.mlp1).T) @ w2(m.split_attention.mlp2).T
    bar = torch.softmax(hat.reshape(b, 3, c), 1)
    out = sum(bar[:, k, :, None, None] * parts[k] for k in range(3))
    return (out.permute(0, 2, 3, 1) @ w2(m.mlp2).T + m.mlp2.bias).permute(0, 3, 1, 2)


def ref_simam(m, x):
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean((2, 3), keepdim=True)) ** 2
    if n == 0:  # a single position: no spread, the energy term vanishes
        return x * torch.sigmoid(torch.full_like(x, 0.5))
    e_inv = d / (4 * (d.sum((2, 3), keepdim=True) / n + m.e_lambda)) + 0.5
    return x * torch.sigmoid(e_inv)


def ref_sk(m, x):
    feats = []
    for br in m.convs:
        conv = br.conv
        u = F.conv2d(x, conv.weight, conv.bias, 1, conv.padding, conv.dilation, conv.groups)
        feats.append(F.relu(bn(u, br.bn)))
    s = sum(feats).mean((2, 3))
    z = s @ w2(m.fc).T + (m.fc.bias if m.fc.bias is not None else 0)
    if isinstance(m.fuse, nn.Sequential):
        z = F.relu(F.batch_norm(z, m.fuse[0].running_mean, m.fuse[0].running_var, m.fuse[0].weight, m.fuse[0].bias, False, 0, m.fuse[0].eps))
    logits = torch.stack([z @ w2(fc).T + (fc.bias if fc.bias is not None else 0) for fc in m.fcs], 0)
    a = torch.softmax(logits, 0)
    return sum(a[i][:, :, None, None] * feats[i] for i in range(len(feats)))


def ref_nam(m, x):
    b = bn(x, m.bn)
    wgt = m.bn.weight.detach().abs() / m.bn.weight.detach().abs().sum()
    return torch.sigmoid((b.permute(0, 2, 3, 1) * wgt).permute(0, 3, 1, 2)) * x


def san_covpool(x):
    """SAN/MPNCOV Covpool: X I_hat X^T with the M x M centring matrix."""
    b, c, h, w = x.shape
    mm = h * w
    xf = x.reshape(b, c, mm)
    i_hat = (-1.0 / mm / mm) * torch.ones(mm, mm, dtype=x.dtype) + (1.0 / mm) * torch.eye(mm, dtype=x.dtype)
    return xf.bmm(i_hat.expand(b, mm, mm)).bmm(xf.transpose(1, 2))


def san_sqrtm(x, n):
    """MPNCOV Sqrtm forward, with its preallocated per-step buffers."""
    b, d, _ = x.shape
    i3 = 3.0 * torch.eye(d, dtype=x.dtype).expand(b, d, d)
    norm_a = (1.0 / 3.0) * x.mul(i3).sum(dim=1).sum(dim=1)
    a = x / norm_a.view(b, 1, 1)
    ys = torch.zeros(b, n, d, d, dtype=x.dtype)
    zs = torch.eye(d, dtype=x.dtype).repeat(b, n, 1, 1)
    zy = 0.5 * (i3 - a)
    ys[:, 0] = a.bmm(zy)
    zs[:, 0] = zy
    for i in range(1, n - 1):
        zy = 0.5 * (i3 - zs[:, i - 1].bmm(ys[:, i - 1]))
        ys[:, i] = ys[:, i - 1].bmm(zy)
        zs[:, i] = zy.bmm(zs[:, i - 1])
    yzy = 0.5 * ys[:, n - 2].bmm(i3 - zs[:, n - 2].bmm(ys[:, n - 2]))
    return yzy * torch.sqrt(norm_a).view(b, 1, 1)


def ref_soca(m, x):
    b, c = x.shape[:2]
    y = san_sqrtm(san_covpool(x), m.iterations)
    return x * m.conv_du(torch.mean(y, 1).view(b, c, 1, 1))


def ref_gam(m, x):
    b, c, h, w = x.shape
    ca = m.channel_attention
    t = x.permute(0, 2, 3, 1).reshape(b, -1, c)
    t = F.linear(F.relu(F.linear(t, w2(ca[0]), ca[0].bias)), w2(ca[2]), ca[2].bias)
    mc = t.reshape(b, h, w, c).permute(0, 3, 1, 2)
    x = x * (torch.sigmoid(mc) if m.channel_sigmoid else mc)
    sa = m.spatial_attention
    s = torch.sigmoid(bn(sa[3](F.relu(bn(sa[0](x), sa[1]))), sa[4]))
    g = sa[0].groups
    if g > 1:
        s = s.view(b, g, c // g, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)
    return x * s


REFERENCES = {
    "se": ref_se, "eca": ref_eca, "ca": ref_ca, "cbam": ref_cbam, "sa": ref_sa, "cc": ref_cc,
    "s2mlp": ref_s2mlp, "simam": ref_simam, "sk": ref_sk, "nam": ref_nam, "soca": ref_soca, "gam": ref_gam,
}
VARIANTS = {  # the fork variants a checkpoint can select, each checked against the same reference
    "se": [{"bias": True, "reduction": 8}],
    "eca": [{"kernel_size": 3}],
    "ca": [{"bias": False}],
    "cbam": [
        {"negative_slope": 0.1, "spatial_bias": True, "spatial_norm": False, "max_first": False},
        {"bias": False, "spatial_norm": False, "max_first": False},
        {"bias": False, "spatial_bias": True, "spatial_norm": False, "residual": True},
    ],
    "sa": [{"groups": 8}],
    "simam": [{"e_lambda": 512.0}],
    "sk": [{"kernels": (1, 3, 5, 7), "dilations": (1, 1, 1, 1), "groups": 1, "bias": True, "fuse_norm": False}],
    "gam": [{"groups": 4, "channel_sigmoid": False}, {"groups": 4}],
}
CASES = [(k, {}) for k in REFERENCES] + [(k, v) for k, vs in VARIANTS.items() for v in vs]


def test_registry_holds_the_twelve_in_order() -> None:
    assert list_attention() == list(REFERENCES)


@pytest.mark.parametrize("key,kwargs", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_paper_formulation(key: str, kwargs: dict, shape: tuple[int, ...]) -> None:
    if key == "cc" and shape[2] * shape[3] > 100:
        shape = (shape[0], shape[1], 5, 7)  # the loop reference is slow; still non-square
    m = build(key, shape[1], **kwargs)
    x = torch.randn(shape)
    with torch.no_grad():
        y = m(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        if key == "soca" and shape[2] * shape[3] == 1:
            return  # SAN divides by a zero trace on a 1x1 map (NaN); ours gates with z = 0
        # float64 on both sides: the comparison is of formulas, not of rounding order
        ref = REFERENCES[key](m.double(), x.double())
        torch.testing.assert_close(m(x.double()), ref, rtol=1e-9, atol=1e-10)


def test_soca_iteration_converges_to_the_matrix_square_root() -> None:
    """Newton-Schulz on the trace-normalised covariance: more steps -> the exact root."""
    from attn_deploy.models.attention.soca import newton_schulz_sqrt

    x = torch.randn(2, 16, 64)
    cov = (x - x.mean(2, keepdim=True)) @ (x - x.mean(2, keepdim=True)).transpose(1, 2) / 64
    tr = cov.diagonal(dim1=1, dim2=2).sum(-1).view(2, 1, 1)
    vals, vecs = torch.linalg.eigh(cov.double())
    exact = (vecs @ torch.diag_embed(vals.clamp_min(0).sqrt()) @ vecs.transpose(1, 2)).float()
    approx = newton_schulz_sqrt((cov / tr).double(), 40).float() * tr.sqrt()
    torch.testing.assert_close(approx, exact, rtol=1e-3, atol=1e-4)


def test_simam_float16_does_not_overflow_on_large_maps() -> None:
    """sum(d) over an 80x80 map with std 4 is ~1e5, past float16's 65504; the mean form is not."""
    m = get_attention("simam").cls(8).eval()
    x = torch.randn(1, 8, 80, 80) * 4
    ref = m(x)
    assert torch.isfinite(m(x.half())).all()
    torch.testing.assert_close(m(x.half()).float(), ref, rtol=2e-2, atol=2e-2)


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def formula(key: str, c: int) -> int:
    """The papers' parameter counts at the default settings of each module."""
    mip = max(8, c // 32)
    d_sk = max(c // 16, 32)
    return {
        "se": 2 * c * c // 16,  # 2C^2/r, bias-free
        "eca": eca_kernel_size(c),  # k = psi(C)
        "ca": 3 * c * mip + 3 * mip + 2 * c,  # conv1 (+b), BN, conv_h, conv_w (+b)
        "cbam": c * c // 8 + 17 * c // 16 + 100,  # shared MLP with biases, 7x7x2 conv, BN(1)
        "sa": 3 * c // 64,  # 3C/G, G = 64
        "cc": 5 * c * c // 4 + 5 * c // 4 + 1,  # Q, K (C/8), V (C), gamma
        "s2mlp": 8 * c * c + 4 * c,  # 3C + C linears with bias, split attention C->C->3C
        "simam": 0,
        "sk": 18 * c * c // 32 + 4 * c + 3 * c * d_sk + 2 * d_sk,  # M=2, G=32, r=16, L=32
        "nam": 2 * c,  # BN gamma, beta
        "soca": 2 * c * c // 8 + c // 8 + c,  # r = 8
        "gam": 25 * c * c + 5 * c,  # r = 4, ungrouped
    }[key]


# published counts (reference table, paper variants) at C = 256 and C = 1024
PUBLISHED = {
    "se": (8192, 131072), "eca": (5, 5), "ca": (6680, 100448), "cbam": (8564, 132260),
    "sa": (12, 48), "cc": (82241, 1312001), "s2mlp": (525312, 8392704), "simam": (0, 0),
    "sk": (62528, 790656), "nam": (512, 2048), "soca": (16672, 263296), "gam": (1639680, 26219520),
}


@pytest.mark.parametrize("key", list(PUBLISHED))
def test_parameter_count_matches_paper(key: str) -> None:
    for c, published in zip((256, 1024), PUBLISHED[key]):
        n = _params(get_attention(key).cls(c))
        assert n == formula(key, c) == published, (key, c, n)


def test_fork_variant_counts() -> None:
    """The forks' variants, as the reference table counts them at C = 256."""
    cls = lambda k: get_attention(k).cls  # noqa: E731
    assert _params(cls("se")(256, bias=True)) == 8464  # Caffe release, with biases
    assert _params(cls("cbam")(256, negative_slope=0.1, spatial_bias=True, spatial_norm=False, max_first=False)) == 8563
    assert _params(cls("cbam")(256, bias=False, spatial_norm=False)) == 8290
    assert _params(cls("sa")(256, groups=8)) == 96
    assert _params(cls("sk")(256, kernels=(1, 3, 5, 7), dilations=(1, 1, 1, 1), groups=1, bias=True, fuse_norm=False)) == 5550112
    assert _params(cls("gam")(256, groups=4, channel_sigmoid=False)) == 435456
    assert eca_kernel_size(64) == 3 and eca_kernel_size(256) == 5 == eca_kernel_size(1024)


def test_gradients_flow_through_every_module() -> None:
    for key in list_attention():
        m = get_attention(key).cls(128).train()
        x = torch.randn(2, 128, 6, 10, requires_grad=True)
        m(x).square().mean().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all(), key
