"""The 2D blocks (cgnl_video/models/blocks_2d.py) for image networks: equal to the
spacetime blocks on one-frame clips (T = 1) with the same weights, outputs and
gradients; the 2D CGNL block against Eq. 12 of the paper written out here (Eqs. 7,
9-11, 13); bad input shapes; one block inside torchvision's ResNet-50 before the
last res4 block (the paper's image setting).

Weights and inputs at trained-model magnitudes: ReLU'd inputs, convolutions of std
0.05, norms with non-zero weight, bias and running statistics (a zero-initialised
norm makes every residual branch 0 and would hide any difference)."""

import math
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cgnl_video.models import (
    CGNLBlock,
    CGNLBlock2d,
    NonLocalBlock,
    NonLocalBlock2d,
    SimpleResidualBlock,
    SimpleResidualBlock2d,
)
from cgnl_video.models.cgnl import CGNL_KERNELS

KERNELS = list(CGNL_KERNELS)
CHANNELS, GROUPS, SIZE = 32, 4, 5  # 16 inner channels, C' = 4, L = C' H W = 100 per group


def trained_like(block: nn.Module, seed: int = 0) -> nn.Module:
    """Convolutions N(0, 0.05) with biases, norms with non-zero parameters and statistics."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                module.weight.normal_(0.0, 0.05)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.05)
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
                    module.running_mean.uniform_(-0.1, 0.1)
                    module.running_var.uniform_(0.5, 2.0)
    return block


def images(batch: int = 2, channels: int = CHANNELS, size: int = SIZE, seed: int = 1) -> torch.Tensor:
    """ReLU'd features (what a residual block's output looks like), float64."""
    torch.manual_seed(seed)
    return torch.randn(batch, channels, size, size, dtype=torch.float64).relu().requires_grad_()


def to_2d(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A spacetime block's state dict for the 2D block (blocks_2d.py's docstring)."""
    return {k: v.squeeze(2) if v.dim() == 5 else v for k, v in state.items()}


def to_3d(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A 2D block's state dict for the spacetime block (blocks_2d.py's docstring)."""
    return {k: v.unsqueeze(2) if v.dim() == 4 else v for k, v in state.items()}


def pair(make_3d, make_2d, training: bool):
    """A trained-like spacetime block and the 2D block loaded (strictly) with its weights."""
    block_3d = trained_like(make_3d().double())
    block_2d = make_2d().double()
    block_2d.load_state_dict(to_2d(block_3d.state_dict()))
    return block_3d.train(training), block_2d.train(training)


def grads(block: nn.Module) -> List[torch.Tensor]:
    """The parameters' gradients, convolution weights as (out, in) matrices."""
    return [p.grad.flatten(1) if p.dim() > 2 else p.grad for p in block.parameters() if p.requires_grad]


def assert_same_at_one_frame(block_3d: nn.Module, block_2d: nn.Module) -> None:
    """Output, input gradient, parameter gradients and BN statistics of the 2D block on
    images equal those of the spacetime block on the same images as one-frame clips."""
    x = images()
    x_3d = x.detach().unsqueeze(2).requires_grad_()
    out_2d, out_3d = block_2d(x), block_3d(x_3d).squeeze(2)
    branch = out_3d - x
    assert branch.abs().max() > 0.1  # the branch is not hidden by a zero norm
    torch.testing.assert_close(out_2d - x, branch, rtol=1e-9, atol=1e-11)
    upstream = torch.randn_like(out_2d)
    out_2d.backward(upstream)
    out_3d.backward(upstream)
    torch.testing.assert_close(x.grad, x_3d.grad.squeeze(2), rtol=1e-9, atol=1e-11)
    for g_2d, g_3d in zip(grads(block_2d), grads(block_3d), strict=True):
        # atol: gradients are O(1); W_z's bias has none in train mode (BN removes it) but rounding
        torch.testing.assert_close(g_2d, g_3d, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(to_2d(block_2d.state_dict()), to_2d(block_3d.state_dict()), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- 2D = spacetime at T = 1


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("norm", ["bn", "gn"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_cgnl_2d_equals_the_spacetime_block_at_one_frame(kernel, norm, fused, training):
    options = dict(groups=GROUPS, kernel=kernel, norm=norm, fused=fused, gamma=0.05, use_scale=kernel != "dot")
    block_3d, block_2d = pair(lambda: CGNLBlock(CHANNELS, **options), lambda: CGNLBlock2d(CHANNELS, **options),
                              training)
    if norm == "gn" and kernel == "dot":  # GN divides the phi . g scalar out (docs/MODELS.md): no phi / g gradient
        block_3d.phi.weight.requires_grad_(False), block_3d.g.weight.requires_grad_(False)
        block_2d.phi.weight.requires_grad_(False), block_2d.g.weight.requires_grad_(False)
    assert_same_at_one_frame(block_3d, block_2d)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("instantiation, pool", [("softmax", (2, 2)), ("dot_product", (2, 2)), ("softmax", (1, 1))])
def test_nonlocal_2d_equals_the_spacetime_block_at_one_frame(instantiation, pool, training):
    """5 x 5 maps: the (2, 2) pooling's ceil mode keeps the last row and column."""
    block_3d, block_2d = pair(lambda: NonLocalBlock(CHANNELS, instantiation=instantiation, pool_size=(1, *pool)),
                              lambda: NonLocalBlock2d(CHANNELS, instantiation=instantiation, pool_size=pool),
                              training)
    assert_same_at_one_frame(block_3d, block_2d)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_simple_residual_2d_equals_the_spacetime_block_at_one_frame(norm, training):
    block_3d, block_2d = pair(lambda: SimpleResidualBlock(CHANNELS, groups=GROUPS, norm=norm),
                              lambda: SimpleResidualBlock2d(CHANNELS, groups=GROUPS, norm=norm), training)
    assert_same_at_one_frame(block_3d, block_2d)


def test_defaults_are_the_spacetime_blocks():
    """The same constructor defaults: the same state dict keys and (but for T) shapes."""
    torch.manual_seed(0)
    for make_3d, make_2d in [(CGNLBlock, CGNLBlock2d), (NonLocalBlock, NonLocalBlock2d),
                             (SimpleResidualBlock, SimpleResidualBlock2d)]:
        block_3d, block_2d = make_3d(64), make_2d(64)
        assert {k: v.shape for k, v in to_3d(block_2d.state_dict()).items()} == \
            {k: v.shape for k, v in block_3d.state_dict().items()}
        block_3d.load_state_dict(to_3d(block_2d.state_dict()))  # strict, the docstring's conversion
    assert CGNLBlock2d(64).extra_repr() == CGNLBlock(64).extra_repr()
    assert NonLocalBlock2d(64).pool.kernel_size == (2, 2) and NonLocalBlock(64).pool.kernel_size == (1, 2, 2)
    assert isinstance(CGNLBlock2d(64).norm, nn.BatchNorm2d)


# ----------------------------------------------------------------------------- against Eq. 12 of the paper


def paper_alpha_squared(kernel: str, order: int, gamma: float) -> List[float]:
    """alpha_p^2 of Eq. 9: dot product theta_i phi_j (p = 1 only); embedded Gaussian
    exp(theta_i phi_j) = sum_p (theta_i phi_j)^p / p!; RBF (Eq. 10) beta (2 gamma)^p / p!
    with beta = exp(-2 gamma) (l2-normalised theta, phi)."""
    if kernel == "dot":
        return [0.0, 1.0]
    if kernel == "embedded_gaussian":
        return [1.0 / math.factorial(p) for p in range(order + 1)]
    return [math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) for p in range(order + 1)]


def paper_cgnl(block: CGNLBlock2d, x: torch.Tensor, alpha_squared: List[float], use_scale: bool) -> torch.Tensor:
    """Z = concat(norm(Y' W_z)) + X (Eq. 13) with vec(Y') = Theta Phi^T g per group
    (Eqs. 11-12), from the block's parameters with matrix products only."""
    w = {name: getattr(block, name).weight.flatten(1) for name in ("theta", "phi", "g", "z")}
    theta, phi, g = (torch.einsum("oc,bchw->bohw", w[name], x) for name in ("theta", "phi", "g"))  # Eq. 7
    batch, inner, height, width = theta.shape
    groups, alpha = block.groups, torch.tensor(alpha_squared, dtype=x.dtype).sqrt()
    per_group, out_per_group = inner // groups, x.shape[1] // groups
    outputs = []
    for b in range(batch):
        sample = []
        for k in range(groups):
            channels = slice(k * per_group, (k + 1) * per_group)
            t, p, v = (a[b, channels].reshape(-1) for a in (theta, phi, g))  # vec: length L = C' H W
            big_theta = torch.stack([alpha_p * t**power for power, alpha_p in enumerate(alpha)], dim=1)  # Eq. 11
            big_phi = torch.stack([alpha_p * p**power for power, alpha_p in enumerate(alpha)], dim=1)
            y = big_theta @ (big_phi.T @ v)  # Eq. 12, (L x (P+1)) ((P+1) x L) L in the associative order
            if use_scale:
                y = y / math.sqrt(t.numel())
            w_z = w["z"][k * out_per_group:(k + 1) * out_per_group]  # (C / G) x C', this group's W_z
            sample.append(w_z @ y.reshape(per_group, -1))
        outputs.append(torch.cat(sample))
    z = torch.stack(outputs)  # (B, C, H W)
    norm = block.norm
    if isinstance(norm, nn.GroupNorm):
        grouped = z.reshape(batch, groups, -1)
        mean, var = grouped.mean(-1, keepdim=True), grouped.var(-1, unbiased=False, keepdim=True)
        z = ((grouped - mean) / torch.sqrt(var + norm.eps)).reshape(z.shape)
    elif block.training:
        mean, var = z.mean((0, 2), keepdim=True), z.var((0, 2), unbiased=False, keepdim=True)
        z = (z - mean) / torch.sqrt(var + norm.eps)
    else:
        z = (z - norm.running_mean[:, None]) / torch.sqrt(norm.running_var[:, None] + norm.eps)
    z = z * norm.weight[:, None] + norm.bias[:, None]
    return x + z.reshape(x.shape)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("groups, norm", [(1, "bn"), (4, "bn"), (4, "gn")])
@pytest.mark.parametrize("kernel", KERNELS)
def test_cgnl_2d_is_eq12_of_the_paper(kernel, groups, norm, training):
    order, gamma, use_scale = 3, 0.05, kernel == "embedded_gaussian"
    block = trained_like(CGNLBlock2d(CHANNELS, groups=groups, kernel=kernel, order=order, gamma=gamma,
                                     use_scale=use_scale, norm=norm).double()).train(training)
    x = images()
    out = block(x)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    block_grads = [x.grad.clone(), *(p.grad.clone() for p in block.parameters())]
    x.grad = None
    block.zero_grad()
    expected = paper_cgnl(block, x, paper_alpha_squared(kernel, order, gamma), use_scale)
    expected.backward(upstream)
    assert (expected - x).abs().max() > 0.1
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-10)
    for got, want in zip(block_grads, [x.grad, *(p.grad for p in block.parameters())], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make", [lambda: CGNLBlock2d(16, groups=2), lambda: NonLocalBlock2d(16),
                                  lambda: SimpleResidualBlock2d(16, groups=2)], ids=["cgnl", "nl", "residual"])
@pytest.mark.parametrize("shape", [(2, 16, 1, 5, 5), (16, 5, 5)], ids=["5d-clip", "3d-unbatched"])
def test_anything_but_an_image_batch_is_refused(make, shape):
    block = make()
    with pytest.raises(ValueError, match=r"takes images \(B, C, H, W\), got a [35]-D tensor of shape"):
        block(torch.rand(shape))


@pytest.mark.parametrize("make", [lambda: CGNLBlock(16, groups=2), lambda: NonLocalBlock(16),
                                  lambda: SimpleResidualBlock(16, groups=2)], ids=["cgnl", "nl", "residual"])
def test_spacetime_blocks_refuse_images_naming_the_2d_blocks(make):
    """A 4-D image batch given to a spacetime block: Conv3d would take it as one unbatched clip."""
    with pytest.raises(ValueError, match=r"takes clips \(B, C, T, H, W\), got a 4-D tensor.*CGNLBlock2d"):
        make()(torch.rand(2, 16, 5, 5))


def test_nonlocal_2d_pool_size_is_height_and_width():
    with pytest.raises(ValueError, match=r"pool_size is \(H, W\) for a 2D block, got \(1, 2, 2\)"):
        NonLocalBlock2d(16, pool_size=(1, 2, 2))


# ----------------------------------------------------------------------------- in torchvision's ResNet-50


def test_cgnl_2d_in_resnet50_before_the_last_res4_block():
    """torchvision's ResNet-50 with a CGNLBlock2d before the last res4 (layer3) block."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    block = CGNLBlock2d(1024, groups=8)
    model.layer3 = nn.Sequential(*model.layer3[:-1], block, model.layer3[-1])
    seen = []
    block.register_forward_hook(lambda module, inputs, output: seen.append((inputs[0], output)))
    x, labels = torch.randn(2, 3, 64, 64), torch.tensor([3, 7])
    out = model(x)
    assert out.shape == (2, 1000) and seen[-1][0].shape == (2, 1024, 4, 4)
    assert torch.equal(*seen[-1])  # a new block is the identity (zero-initialised norm)
    F.cross_entropy(out, labels).backward()
    assert block.norm.weight.grad.abs().sum() > 0 and block.norm.bias.grad.abs().sum() > 0
    # trained-like: the block changes the features and the gradient reaches all its parameters
    model.zero_grad()
    trained_like(block)
    F.cross_entropy(model(x), labels).backward()
    assert (seen[-1][1] - seen[-1][0]).abs().max() > 0.1
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # image code's channels-last conversion works (a spacetime block's 5-D weights refuse it)
    model.eval()
    expected = model(x)
    model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: CGNLBlock2d(32, 16, groups=4, kernel="rbf"), lambda: NonLocalBlock2d(32, 16)],
                         ids=["cgnl_rbf", "nl"])
def test_block_in_a_user_network_exports_to_onnx_and_torchscript(make, tmp_path):
    """A user's image network holding a 2D block deploys like ours (tools/export.py's
    formats): ONNX through onnxruntime at another batch size, and a traced TorchScript
    file after a save/load round trip, both equal to PyTorch with the branch switched on."""
    import onnxruntime

    torch.manual_seed(0)
    block = make()
    norm = block.norm if hasattr(block, "norm") else block.bn
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), block, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        nn.init.uniform_(norm.weight, 0.5, 1.5)  # trained-like: the zero-initialised norm hides the branch
        nn.init.normal_(norm.bias, std=0.1)
    net.eval()
    x, other = torch.randn(2, 3, 12, 12), torch.randn(3, 3, 12, 12)
    without_branch = net[:2](other)
    assert (block(without_branch) - without_branch).abs().max() > 0.1
    path = str(tmp_path / "net.onnx")
    torch.onnx.export(net, (x,), path, input_names=["image"], dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"image": other.numpy()})[0]
    with torch.no_grad():
        expected = net(other)
    assert abs(torch.from_numpy(onnx_out) - expected).max() < 1e-5
    traced_path = str(tmp_path / "net.pt")
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(net, x), traced_path)
        assert (torch.jit.load(traced_path)(other) - expected).abs().max() < 1e-6
