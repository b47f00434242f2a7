"""NL block (Wang et al.) and the simple residual block of the CGNL paper's Table 3."""

import pytest
import torch

from cgnl_video.models import NonLocalBlock, SimpleResidualBlock


def _naive_nonlocal(block: NonLocalBlock, x: torch.Tensor) -> torch.Tensor:
    """Position by position: y_i = sum_j w(theta_i, phi_j) g_j, written with explicit loops."""
    theta = block.theta(x)
    source = torch.nn.functional.max_pool3d(x, (1, 2, 2), (1, 2, 2), ceil_mode=True) if block.pool else x
    phi, g = block.phi(source), block.g(source)
    b, c, t, h, w = theta.shape
    theta, phi, g = theta.reshape(b, c, -1), phi.reshape(b, c, -1), g.reshape(b, c, -1)
    y = torch.zeros_like(theta)
    for n in range(b):
        for i in range(theta.shape[-1]):
            scores = torch.stack([theta[n, :, i] @ phi[n, :, j] for j in range(phi.shape[-1])])
            if block.instantiation == "softmax":
                weights = torch.exp(scores / c**0.5) / torch.exp(scores / c**0.5).sum()
            else:
                weights = scores / phi.shape[-1]
            y[n, :, i] = (weights[None, :] * g[n]).sum(-1)
    return x + block.norm(block.z(y.reshape(b, c, t, h, w)))


def _randomised(block: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.3)
    return block.eval()


@pytest.mark.parametrize("instantiation", ["softmax", "dot_product"])
@pytest.mark.parametrize("pool", [(1, 1, 1), (1, 2, 2)])
def test_nonlocal_matches_a_position_by_position_reference(instantiation, pool):
    torch.manual_seed(0)
    block = _randomised(NonLocalBlock(8, instantiation=instantiation, pool_size=pool)).double()
    x = torch.randn(2, 8, 2, 3, 4, dtype=torch.float64)
    assert torch.allclose(block(x), _naive_nonlocal(block, x), rtol=1e-10, atol=1e-12)


def test_nonlocal_starts_as_identity_with_the_paper_layout():
    block = NonLocalBlock(1024)
    x = torch.randn(1, 1024, 2, 4, 4)
    assert torch.equal(block(x), x)
    assert block.theta.out_channels == 512 and block.theta.bias is not None
    assert isinstance(block.pool, torch.nn.MaxPool3d) and block.pool.kernel_size == (1, 2, 2)
    assert not block.norm.weight.detach().any() and not block.norm.bias.detach().any()
    # FACTS section 3: one NL block at res4 adds about 2.1 M parameters.
    assert sum(p.numel() for p in block.parameters()) == 3 * (1024 * 512 + 512) + 512 * 1024 + 1024 + 2 * 1024


def test_nonlocal_handles_t_equal_one_odd_and_unit_maps():
    block = _randomised(NonLocalBlock(8))
    for shape in [(2, 8, 1, 7, 7), (1, 8, 1, 1, 1), (1, 8, 3, 5, 2)]:
        x = torch.randn(shape)
        assert block(x).shape == x.shape


def test_nonlocal_gradients_reach_every_parameter():
    torch.manual_seed(1)
    block = NonLocalBlock(8)
    with torch.no_grad():
        block.norm.weight.fill_(1.0)
    block(torch.randn(2, 8, 2, 4, 4)).square().sum().backward()
    for name, param in block.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_softmax_without_scale_differs_from_scaled():
    torch.manual_seed(2)
    scaled = _randomised(NonLocalBlock(8, pool_size=(1, 1, 1)))
    plain = NonLocalBlock(8, pool_size=(1, 1, 1), scale=False).eval()
    plain.load_state_dict(scaled.state_dict())
    x = torch.randn(1, 8, 2, 3, 3)
    assert not torch.allclose(scaled(x), plain(x))


def test_simple_residual_block_is_theta_then_grouped_wz_then_norm():
    torch.manual_seed(3)
    block = _randomised(SimpleResidualBlock(16, groups=4))
    x = torch.randn(2, 16, 2, 3, 3)
    assert torch.allclose(block(x), x + block.norm(block.z(block.theta(x))))
    assert block.z.groups == 4
    assert set(block.state_dict()) >= {"theta.weight", "z.weight", "norm.weight", "norm.bias"}
    fresh = SimpleResidualBlock(16, groups=4)
    assert torch.equal(fresh(x), x)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="instantiation"):
        NonLocalBlock(8, instantiation="gaussian")
    with pytest.raises(ValueError, match="groups"):
        SimpleResidualBlock(16, groups=3)
