"""Match reverts by custom error name: brownie decodes them as "ErrorName: arg, arg"."""

import re

import brownie


def _render(arg: object) -> str:
    """An argument as brownie prints it: addresses lowercase, bytes32 as a Python bytes literal."""
    if isinstance(arg, bytes):
        return str(bytes(arg))
    if isinstance(arg, str) and arg.startswith("0x") and len(arg) == 66:
        return str(bytes.fromhex(arg[2:]))
    return arg.lower() if isinstance(arg, str) else str(arg)


def reverts_with(error_name: str, *args: object) -> brownie.test.managers.runner.RevertContextManager:
    """Expect a revert with the custom error `error_name` (and exactly `args`, when given)."""
    if args:
        rendered = ", ".join(_render(arg) for arg in args)
        return brownie.reverts(revert_pattern=rf"(?i){re.escape(error_name)}: {re.escape(rendered)}")
    return brownie.reverts(revert_pattern=rf"{re.escape(error_name)}(:.*)?")
