"""Wire codecs: error bounds, exact sizes, and the subspace codec's exactness in its subspace."""

import pytest
import torch

from offchain.model.codecs import CodecError, get_codec, subspace_basis
from offchain.model.spec import CodecSpec

D = 96
SHAPE = (4, 16, D)


def _tensor(seed=0, scale=3.0):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)) * scale


def test_dense_is_lossless_and_4_bytes_per_value():
    codec = get_codec(CodecSpec(name="dense"), D)
    x = _tensor()
    data = codec.encode(x)
    assert len(data) == codec.payload_bytes(SHAPE) == x.numel() * 4
    assert torch.equal(codec.decode(data, SHAPE), x)
    assert codec.bytes_per_token == 4 * D


def test_fp16_error_bound():
    codec = get_codec(CodecSpec(name="fp16"), D)
    x = _tensor()
    y = codec.decode(codec.encode(x), SHAPE)
    assert codec.bytes_per_token == 2 * D
    # fp16 keeps 11 significant bits: relative error <= 2^-11 for normal numbers
    assert ((y - x).abs() <= x.abs() * 2**-11 + 1e-7).all()


@pytest.mark.parametrize("block", [32, 64, 100])
def test_int8_blockwise_error_bound(block):
    codec = get_codec(CodecSpec(name="int8", block_size=block), D)
    x = _tensor()
    x[0, 0, :5] = 0.0
    data = codec.encode(x)
    count = x.numel()
    assert len(data) == count + 4 * -(-count // block)
    y = codec.decode(data, SHAPE)
    flat, err = x.reshape(-1), (y - x).reshape(-1).abs()
    for start in range(0, count, block):
        absmax = flat[start : start + block].abs().max()
        # round-to-nearest of x * 127 / absmax: at most half a step, plus float slack
        assert err[start : start + block].max() <= absmax / 254 * 1.0001
    assert codec.encode(x) == data


def test_int8_all_zero_block_and_ratio():
    codec = get_codec(CodecSpec(name="int8"), D)
    zeros = torch.zeros(SHAPE)
    assert torch.equal(codec.decode(codec.encode(zeros), SHAPE), zeros)
    assert 4 * D / codec.bytes_per_token >= 3.5


def test_subspace_exact_in_subspace_and_projects_outside():
    k = 12
    codec = get_codec(CodecSpec(name="subspace", k=k), D, seed=7)
    basis = subspace_basis(D, k, 7)
    assert torch.allclose(basis.T @ basis, torch.eye(k), atol=1e-6)
    coordinates = torch.randn(*SHAPE[:-1], k, generator=torch.Generator().manual_seed(1))
    inside = coordinates @ basis.T
    data = codec.encode(inside)
    assert len(data) == codec.payload_bytes(SHAPE) == 4 * 16 * k * 4
    assert codec.bytes_per_token == 4 * k
    assert torch.allclose(codec.decode(data, SHAPE), inside, atol=1e-5, rtol=0)
    outside = _tensor()
    projected = codec.decode(codec.encode(outside), SHAPE)
    assert torch.allclose(projected, outside @ basis @ basis.T, atol=1e-5)
    residual = outside - projected
    assert torch.allclose(residual @ basis, torch.zeros(*SHAPE[:-1], k), atol=1e-4)


def test_subspace_basis_depends_on_seed_only():
    assert torch.equal(subspace_basis(D, 8, 3), subspace_basis(D, 8, 3))
    assert not torch.equal(subspace_basis(D, 8, 3), subspace_basis(D, 8, 4))


@pytest.mark.parametrize("name", ["dense", "fp16", "int8", "subspace"])
def test_wrong_size_payload_is_refused(name):
    spec = CodecSpec(name=name, k=8) if name == "subspace" else CodecSpec(name=name)
    codec = get_codec(spec, D)
    data = codec.encode(_tensor())
    with pytest.raises(CodecError, match="expected"):
        codec.decode(data[:-1], SHAPE)
    with pytest.raises(CodecError, match="d_model"):
        codec.decode(data, (4, 16, D + 1))


@pytest.mark.parametrize(("coordinates", "per_token"), [("fp16", 2 * 32), ("int8", 32 + 4 * 32 / 64)])
def test_subspace_with_compressed_coordinates(coordinates, per_token):
    k = 32
    spec = CodecSpec(name="subspace", k=k, coordinates=coordinates)
    codec = get_codec(spec, D, seed=7)
    assert codec.bytes_per_token == per_token
    basis = subspace_basis(D, k, 7)
    inside = torch.randn(*SHAPE[:-1], k, generator=torch.Generator().manual_seed(2)) @ basis.T
    decoded = codec.decode(codec.encode(inside), SHAPE)
    # the basis is orthonormal: the error in d dims is the coordinates' error, bounded by the
    # inner codec (fp16: 2^-11 relative; int8: absmax/254 per coordinate)
    coordinate_error = (decoded - inside) @ basis
    bound = (
        2**-11 * (inside @ basis).abs().max() if coordinates == "fp16" else (inside @ basis).abs().max() / 254
    )
    assert coordinate_error.abs().max() <= bound * 1.01 + 1e-6
