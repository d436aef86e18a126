"""WorkLedger.setParameter: only the owner, every parameter at and beyond each of its bounds,
unknown names refused."""

import pytest
from conftest import TEST_LEDGER
from custom_errors import reverts_with

DAY = 86_400
U88, U64, U96 = 2**88 - 1, 2**64 - 1, 2**96 - 1
# name -> (lowest allowed, highest allowed), with the test deployment's other parameters; None: no
# value below the lowest exists (uint256 cannot be negative).
BOUNDS = {
    "challengeWindow": (TEST_LEDGER.availability_grace + 1, 30 * DAY),
    "claimBond": (1, U88),
    "maxWorkUnitsPerClaim": (1, U64),
    "quorum": (1, 255),
    "burnBps": (0, 10_000),
    "voteWindow": (1, 30 * DAY),
    "unbondingPeriod": (0, 365 * DAY),
    "minWorkerStake": (0, U96),
    "minValidatorStake": (0, U96),
    "maxPendingClaims": (1, 64),
    "availabilityGrace": (0, TEST_LEDGER.challenge_window - 1),
    "validatorDelay": (0, 30 * DAY),
    "voteBond": (0, U88),
    "loserVoteSlashBps": (0, 10_000),
    "noQuorumSlashBps": (0, 10_000),
}
FIELDS = [
    "challengeWindow",
    "claimBond",
    "maxWorkUnitsPerClaim",
    "quorum",
    "burnBps",
    "voteWindow",
    "unbondingPeriod",
    "minWorkerStake",
    "minValidatorStake",
    "maxPendingClaims",
    "availabilityGrace",
    "validatorDelay",
    "voteBond",
    "loserVoteSlashBps",
    "noQuorumSlashBps",
]


def name32(name: str) -> bytes:
    return name.encode().ljust(32, b"\0")


def test_every_parameter_has_bounds():
    assert set(BOUNDS) == set(FIELDS) and len(FIELDS) == len(TEST_LEDGER.as_tuple())


@pytest.mark.parametrize("name", FIELDS)
def test_each_bound_is_accepted_and_each_value_beyond_it_refused(ledger, accounts, name):
    owner, low, high = accounts[0], *BOUNDS[name]
    field = FIELDS.index(name)
    for value in (low, high):
        tx = ledger.setParameter(name32(name), value, {"from": owner})
        assert tx.events["ParameterChanged"] == {"name": "0x" + name32(name).hex(), "value": value}
        assert ledger.parameters()[field] == value
    if low > 0:
        with reverts_with("ParameterOutOfBounds", "0x" + name32(name).hex(), low - 1):
            ledger.setParameter(name32(name), low - 1, {"from": owner})
    with reverts_with("ParameterOutOfBounds", "0x" + name32(name).hex(), high + 1):
        ledger.setParameter(name32(name), high + 1, {"from": owner})
    assert ledger.parameters()[field] == high


def test_the_availability_grace_stays_inside_the_challenge_window(ledger, accounts):
    owner = accounts[0]
    ledger.setParameter(name32("availabilityGrace"), 50, {"from": owner})
    with reverts_with("ParameterOutOfBounds", "0x" + name32("challengeWindow").hex(), 50):
        ledger.setParameter(name32("challengeWindow"), 50, {"from": owner})
    ledger.setParameter(name32("challengeWindow"), 51, {"from": owner})
    with reverts_with("ParameterOutOfBounds", "0x" + name32("availabilityGrace").hex(), 51):
        ledger.setParameter(name32("availabilityGrace"), 51, {"from": owner})


def test_only_the_owner_sets_parameters_and_unknown_names_are_refused(ledger, accounts):
    with reverts_with("OwnableUnauthorizedAccount", accounts[1].address):
        ledger.setParameter(name32("quorum"), 3, {"from": accounts[1]})
    for unknown in ("quorums", "", "treasury"):
        with reverts_with("UnknownParameter", "0x" + name32(unknown).hex()):
            ledger.setParameter(name32(unknown), 1, {"from": accounts[0]})
