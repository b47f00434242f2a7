"""CGNL block: the compact form against the exact generalized non-local (Eq. 8),
the Taylor kernels against their closed forms, and the block's contracts."""

import math

import pytest
import torch

from cgnl_video.models import CGNLBlock, exact_generalized_nonlocal, taylor_coefficients
from cgnl_video.models.cgnl import CGNL_KERNELS

KERNELS = list(CGNL_KERNELS)


def _randomise_norm(block: CGNLBlock) -> None:
    """Give the (zero-initialised) norm non-trivial parameters and statistics."""
    with torch.no_grad():
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.uniform_(-0.5, 0.5)
        if hasattr(block.norm, "running_var"):
            block.norm.running_mean.uniform_(-0.1, 0.1)
            block.norm.running_var.uniform_(0.5, 2.0)


def _embeddings(shape, groups, kernel, use_scale=False):
    torch.manual_seed(0)
    block = CGNLBlock(shape[1], groups=groups, kernel=kernel, order=3, use_scale=use_scale).double()
    with torch.no_grad():
        for conv in (block.theta, block.phi, block.g):
            conv.weight.normal_(0.0, 0.3)
    x = torch.randn(shape, dtype=torch.float64)
    return block, x


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_compact_form_equals_exact_generalized_nonlocal(kernel, groups):
    """Eq. 12 (associativity) equals Eq. 8 built with the full L x L matrix, T > 1."""
    block, x = _embeddings((2, 16, 3, 4, 3), groups, kernel)
    theta, phi, g = block.embed(x)
    exact = exact_generalized_nonlocal(theta, phi, g, groups, block.coefficients)
    compact = block.aggregate(theta, phi, g)
    assert torch.allclose(compact, exact, rtol=1e-10, atol=1e-12)
    # The whole block too: Z = norm(W_z y) + X with non-zero norm parameters.
    _randomise_norm(block)
    block.eval()
    expected = x + block.norm(block.z(exact))
    assert torch.allclose(block(x), expected, rtol=1e-10, atol=1e-12)


def test_use_scale_divides_by_the_square_root_of_the_group_length():
    block, x = _embeddings((1, 8, 2, 3, 3), 2, "embedded_gaussian", use_scale=True)
    theta, phi, g = block.embed(x)
    exact = exact_generalized_nonlocal(theta, phi, g, 2, block.coefficients, use_scale=True)
    assert torch.allclose(block.aggregate(theta, phi, g), exact, rtol=1e-10, atol=1e-12)
    unscaled = exact_generalized_nonlocal(theta, phi, g, 2, block.coefficients)
    length = 2 * 2 * 3 * 3  # C' T H W: 8 inputs -> 4 inner channels in 2 groups
    assert torch.allclose(exact * math.sqrt(length), unscaled, rtol=1e-10)


def test_dot_kernel_is_the_phi_g_scalar_times_theta():
    block, x = _embeddings((2, 8, 2, 3, 3), 2, "dot")
    theta, phi, g = block.embed(x)
    t, p, v = (a.reshape(2, 2, -1) for a in (theta, phi, g))
    expected = ((p * v).sum(-1, keepdim=True) * t).reshape(theta.shape)
    assert torch.allclose(block.aggregate(theta, phi, g), expected, rtol=1e-12)


def test_taylor_coefficients_follow_the_paper():
    assert taylor_coefficients("dot") == (0.0, 1.0)
    assert taylor_coefficients("embedded_gaussian", 3) == pytest.approx((1, 1, 1 / 2, 1 / 6))
    gamma, beta = 1e-4, math.exp(-2e-4)
    expected = [beta * (2 * gamma) ** p / math.factorial(p) for p in range(4)]
    assert taylor_coefficients("rbf", 3, gamma) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError):
        taylor_coefficients("cosine")


@pytest.mark.parametrize("kernel, gamma", [("embedded_gaussian", 1e-4), ("rbf", 1e-4), ("rbf", 0.5)])
def test_truncated_kernel_approaches_its_closed_form(kernel, gamma):
    """sum_p alpha_p^2 (theta_i phi_j)^p -> exp(x) (embedded Gaussian) or
    beta exp(2 gamma x) (RBF), x = theta_i phi_j: the error falls with every order P = 1..4."""
    reach = 2.0 if kernel == "embedded_gaussian" else 1.0 / gamma  # exponent in [-2, 2]
    products = torch.linspace(-reach, reach, 101, dtype=torch.float64)
    if kernel == "embedded_gaussian":
        target = torch.exp(products)
    else:
        target = math.exp(-2 * gamma) * torch.exp(2 * gamma * products)
    errors = []
    for order in range(1, 5):
        series = sum(c * products**p for p, c in enumerate(taylor_coefficients(kernel, order, gamma)))
        errors.append((series - target).abs().max().item())
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1 * errors[0], errors


def test_new_block_is_the_identity_and_state_dict_layout():
    block = CGNLBlock(16, groups=4)
    x = torch.randn(2, 16, 3, 4, 4)
    assert torch.equal(block(x), x)
    assert set(block.state_dict()) == {
        "theta.weight", "phi.weight", "g.weight", "z.weight",
        "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var", "norm.num_batches_tracked",
    }
    assert block.z.groups == 4 and block.theta.out_channels == 8
    gn = CGNLBlock(16, groups=4, norm="gn")
    assert isinstance(gn.norm, torch.nn.GroupNorm) and gn.norm.num_groups == 4
    assert set(gn.state_dict()) == {"theta.weight", "phi.weight", "g.weight", "z.weight", "norm.weight", "norm.bias"}


def test_fused_path_gives_the_same_output_and_the_same_state_dict():
    torch.manual_seed(1)
    plain = CGNLBlock(16, groups=2, kernel="rbf")
    _randomise_norm(plain)
    fused = CGNLBlock(16, groups=2, kernel="rbf", fused=True)
    fused.load_state_dict(plain.state_dict(), strict=True)
    plain.eval(), fused.eval()
    x = torch.randn(2, 16, 2, 5, 5)
    assert torch.allclose(plain(x), fused(x), atol=1e-6)
    assert list(fused.state_dict()) == list(plain.state_dict())


def test_channels_last_input_gives_the_same_output():
    torch.manual_seed(2)
    block = CGNLBlock(16, groups=4, kernel="embedded_gaussian")
    _randomise_norm(block)
    block.eval()
    x = torch.randn(2, 16, 2, 5, 5)
    out = block.to(memory_format=torch.channels_last_3d)(x.contiguous(memory_format=torch.channels_last_3d))
    assert torch.allclose(out, block(x), atol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_gradients_reach_every_parameter_and_t_equal_one_works(kernel, norm):
    torch.manual_seed(3)
    block = CGNLBlock(16, groups=2, kernel=kernel, norm=norm)
    with torch.no_grad():
        block.norm.weight.fill_(1.0)  # at init the zero norm blocks the gradient of the convs
    x = torch.randn(2, 16, 1, 4, 4, requires_grad=True)  # T = 1
    out = block(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    for name, param in block.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_at_init_only_the_norm_receives_gradient():
    block = CGNLBlock(8, groups=2)
    block(torch.randn(2, 8, 2, 3, 3)).square().sum().backward()
    assert block.norm.weight.grad.abs().sum() > 0
    assert block.theta.weight.grad.abs().sum() == 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_float64_gradcheck_on_a_tiny_block(kernel):
    torch.manual_seed(4)
    block = CGNLBlock(4, groups=2, kernel=kernel, order=2, gamma=0.1, norm="gn").double()
    _randomise_norm(block)
    x = torch.randn(1, 4, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))


def test_parameter_count_of_a_res4_block_matches_the_facts():
    # FACTS section 3: one CGNL block (G = 8) at res4 adds about 1.6 M parameters.
    block = CGNLBlock(1024, 512, groups=8)
    assert sum(p.numel() for p in block.parameters()) == 3 * 1024 * 512 + 512 * 1024 // 8 + 2 * 1024


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="groups"):
        CGNLBlock(16, groups=3)
    with pytest.raises(ValueError, match="kernel"):
        CGNLBlock(16, groups=2, kernel="poly")
    with pytest.raises(ValueError, match="norm"):
        CGNLBlock(16, groups=2, norm="ln")
