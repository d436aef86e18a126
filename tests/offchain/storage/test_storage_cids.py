"""CIDs equal what kubo's `ipfs add` prints: published vectors plus the official JS importer as an oracle."""

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from offchain.storage.cids import bytes32_to_cid, cid_text, cid_to_bytes32, parse_cid
from offchain.storage.errors import InvalidCID
from offchain.storage.unixfs import KUBO_DEFAULT, Profile, build_file, chunk_bytes, file_cid

ORACLE = Path(__file__).with_name("js_unixfs_cid.mjs")
CHUNK = KUBO_DEFAULT.chunk_size
FANOUT = KUBO_DEFAULT.max_links


def test_published_kubo_vectors():
    assert file_cid(b"hello\n") == "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
    assert file_cid(b"") == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


def test_a_cidv0_round_trips_through_its_on_chain_bytes32():
    cid = file_cid(b"hello\n")
    raw = cid_to_bytes32(cid)
    assert len(raw) == 32
    assert raw == parse_cid(cid)[2:]  # the digest after the 0x12 0x20 multihash prefix
    assert bytes32_to_cid(raw) == cid
    assert cid_to_bytes32(f"/ipfs/{cid}") == raw


def test_a_dag_pb_cidv1_maps_to_the_same_bytes32_as_its_cidv0():
    cid = file_cid(b"hello\n")
    v1 = cid_text(bytes([1, 0x70]) + parse_cid(cid))
    assert v1.startswith("b")
    assert cid_to_bytes32(v1) == cid_to_bytes32(cid)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("not-a-cid", "not a CID"),
        ("", "not a CID"),
        ("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", "only dag-pb"),  # raw leaves
    ],
)
def test_cids_that_do_not_fit_a_bytes32_are_refused(bad, reason):
    with pytest.raises(InvalidCID, match=reason):
        cid_to_bytes32(bad)


@pytest.mark.parametrize("raw", [bytes(32), b"\x01" * 31, b"\x01" * 33])
def test_bytes32_that_name_no_cid_are_refused(raw):
    with pytest.raises(InvalidCID):
        bytes32_to_cid(raw)


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def python_cid_and_blocks(data: bytes, profile: Profile) -> tuple[str, int]:
    blocks: set[bytes] = set()
    root = build_file(chunk_bytes(data, profile.chunk_size), lambda cid, _block: blocks.add(cid), profile)
    return cid_text(root), len(blocks)


def js_cids(tmp_path: Path, blobs: list[bytes], profile: Profile) -> list[tuple[str, int]]:
    node = shutil.which("node")
    assert node, "node is needed for the JS UnixFS importer oracle (installed by make setup)"
    paths = []
    for index, data in enumerate(blobs):
        path = tmp_path / f"blob{index}"
        path.write_bytes(data)
        paths.append(str(path))
    args = [node, str(ORACLE), str(profile.chunk_size), str(profile.max_links), *paths]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, check=True).stdout.split("\n")
    return [(line.split()[0], int(line.split()[1])) for line in out if line]


KUBO_SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7, FANOUT * CHUNK, FANOUT * CHUNK + 1]


def test_kubo_profile_matches_js_importer_at_chunk_and_fanout_boundaries(tmp_path):
    blobs = [blob(size, seed=size) for size in KUBO_SIZES]
    blobs.append(bytes(FANOUT * CHUNK + CHUNK // 2))  # zeros: every full leaf is the same block
    assert js_cids(tmp_path, blobs, KUBO_DEFAULT) == [python_cid_and_blocks(b, KUBO_DEFAULT) for b in blobs]


def test_deep_trees_match_js_importer_with_small_chunks(tmp_path):
    """Depth 3+ needs > 174^2 chunks (7.4 GiB) at kubo's sizes; the same layout code with 16-byte
    chunks and 4 links per node reaches depth 5 in a few KiB, checked against the JS importer."""
    profile = Profile(chunk_size=16, max_links=4)
    sizes = sorted({n + d for k in range(1, 5) for n in [16 * 4**k] for d in (-1, 0, 1)} | {0, 1, 16, 17})
    blobs = [blob(size, seed=size) for size in sizes]
    assert js_cids(tmp_path, blobs, profile) == [python_cid_and_blocks(b, profile) for b in blobs]


@pytest.mark.parametrize("seed", range(5))
def test_chunking_pieces_equals_chunking_the_joined_bytes(seed):
    rng = random.Random(seed)
    pieces = [rng.randbytes(rng.choice([0, 1, 7, 16, 33, 100])) for _ in range(rng.randrange(0, 40))]
    joined = b"".join(pieces)
    expected = [bytes(chunk) for chunk in chunk_bytes(joined, 16)]
    assert [bytes(chunk) for chunk in chunk_bytes(iter(pieces), 16)] == expected
    assert file_cid(iter(pieces), Profile(16, 4)) == file_cid(joined, Profile(16, 4))


@pytest.mark.parametrize("text", ["", "hello", "Qm123", "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXE"])
def test_parse_cid_rejects_garbage(text):
    with pytest.raises(InvalidCID):
        parse_cid(text)


def test_parse_cid_round_trips_v0_and_v1():
    v0 = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
    assert cid_text(parse_cid(v0)) == v0
    assert cid_text(parse_cid(f"/ipfs/{v0}")) == v0
    v1 = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
    assert cid_text(parse_cid(v1)) == v1


def test_bytes32_holds_a_cidv0_losslessly():
    cid = file_cid(b"a checkpoint")
    digest = cid_to_bytes32(cid)
    assert len(digest) == 32 and bytes32_to_cid(digest) == cid
    v1 = cid_text(b"\x01\x55" + parse_cid(cid))  # raw leaf CIDv1 with the same multihash
    with pytest.raises(InvalidCID, match="CIDv0"):
        cid_to_bytes32(v1)
    with pytest.raises(InvalidCID, match="32 bytes, not 31"):
        bytes32_to_cid(digest[:31])
