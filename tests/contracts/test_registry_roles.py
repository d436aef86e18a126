"""ModelRegistry roles for the P2P plane: drivers named by the creator, gateways by the operator."""

from conftest import ZERO_ADDRESS
from custom_errors import reverts_with


def test_the_creator_names_the_drivers(registry, eth_model, creator, operator, accounts):
    driver = accounts[6]
    assert not registry.isDriver(eth_model, driver)
    for outsider in (operator, accounts[5]):
        with reverts_with("NotModelCreator", eth_model, outsider.address):
            registry.setDriver(eth_model, driver, True, {"from": outsider})
    tx = registry.setDriver(eth_model, driver, True, {"from": creator})
    assert tx.events["DriverSet"] == {"modelId": eth_model, "driver": driver, "allowed": True}
    assert registry.isDriver(eth_model, driver)
    assert not registry.isGateway(eth_model, driver)  # one role does not grant the other
    assert not registry.isDriver(eth_model + 1, driver)  # nor another model's
    registry.setDriver(eth_model, driver, False, {"from": creator})
    assert not registry.isDriver(eth_model, driver)
    with reverts_with("ZeroAddress"):
        registry.setDriver(eth_model, ZERO_ADDRESS, True, {"from": creator})


def test_the_operator_names_the_gateways(registry, eth_model, creator, operator, accounts):
    gateway = accounts[6]
    for outsider in (creator, accounts[5]):
        with reverts_with("NotModelOperator", eth_model, outsider.address):
            registry.setGateway(eth_model, gateway, True, {"from": outsider})
    tx = registry.setGateway(eth_model, gateway, True, {"from": operator})
    assert tx.events["GatewaySet"] == {"modelId": eth_model, "gateway": gateway, "allowed": True}
    registry.setDriver(eth_model, gateway, True, {"from": creator})
    registry.setGateway(eth_model, gateway, False, {"from": operator})
    assert not registry.isGateway(eth_model, gateway)
    assert registry.isDriver(eth_model, gateway)  # removing one role keeps the other


def test_roles_of_an_unknown_model_are_refused(registry, creator):
    missing = registry.modelCount() + 1
    with reverts_with("UnknownModel", missing):
        registry.setDriver(missing, creator, True, {"from": creator})
    with reverts_with("UnknownModel", missing):
        registry.setGateway(missing, creator, True, {"from": creator})
